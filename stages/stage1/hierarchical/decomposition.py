"""How well the object slots find the objects, against ground-truth sprite positions.

Measured on data with factors (the synthetic sprites): for every frame, the slots whose presence
is above `presence_threshold` are the "present" slots, each at its window centre (z_where's x, y
mapped to pixels). Scores, each beside its chance level (random windows: the same number of
present slots per frame, centres uniform over the frame; a constant best guess for the count):

- recall: the share of present objects (all frames) with a present slot centre within
  `radius` x frame side of the object's centre;
- precision: the share of present slots whose centre lies within that radius of an object;
- count_accuracy: the share of frames whose number of present slots equals the number of objects;
- centre_spread: the mean over slots of the std over frames of their centres, in frame sides
  (0 for slots that never move: a detector that ignores the image);
- identity_switches: the share of consecutive-frame pairs, for slots on an object in both frames,
  where the slot's nearest object changes (slots are aligned across frames before they are stored).

Axis order: z_where (V, T, N, 4) as (x, y, size_x, size_y), x and y in [-1, 1] with
align_corners=False (so pixel = (x + 1) / 2 * side); presence (V, T, N); positions (V, T, M, 2)
in pixels (x, y) from the top-left corner; present (V, M) bool.
"""

from __future__ import annotations

import numpy as np

from vidlat.errors import DataError


def scorable(model, videos) -> bool:
    """Whether these scores apply: a slot model (`slots` > 0) on a video dataset whose factors say
    where the sprites are (`position`, `present`)."""
    factors = set(videos.factor_names())
    return bool(getattr(model, "slots", 0)) and {"position", "present"} <= factors


def slot_centres(where: np.ndarray, side: int) -> np.ndarray:
    """z_where (..., 4) -> window centres (..., 2) in pixels (x, y)."""
    return (np.asarray(where, np.float64)[..., :2] + 1.0) / 2.0 * side


def _matches(slots: np.ndarray, objects: np.ndarray, radius: float) -> np.ndarray:
    """(..., N, 2), (..., M, 2) -> (..., N, M) bool: slot n within `radius` pixels of object m."""
    d = np.linalg.norm(slots[..., :, None, :] - objects[..., None, :, :], axis=-1)
    return d <= radius


def _scores(centres, on, objects, present, radius) -> tuple[float, float]:
    """(recall, precision) of slot centres (V, T, N, 2) with presence mask `on` (V, T, N)."""
    hit = _matches(centres, objects, radius)  # (V, T, N, M)
    hit &= on[..., :, None] & present[:, None, None, :]
    n_obj = present.sum() * centres.shape[1]
    recall = hit.any(axis=2).sum() / n_obj if n_obj else float("nan")
    n_on = on.sum()
    precision = hit.any(axis=3).sum() / n_on if n_on else float("nan")
    return float(recall), float(precision)


def decomposition_scores(
    where: np.ndarray,
    presence: np.ndarray,
    positions: np.ndarray,
    present: np.ndarray,
    side: int,
    radius: float = 0.1,
    presence_threshold: float = 0.5,
    seed: int = 0,
) -> dict[str, float]:
    """The scores of the module docstring, and `chance_*` for recall, precision, count_accuracy."""
    where, presence = np.asarray(where), np.asarray(presence)
    positions, present = np.asarray(positions, np.float64), np.asarray(present, bool)
    v, t, n = presence.shape
    if where.shape != (v, t, n, 4) or positions.shape[:2] != (v, t) or present.shape[0] != v:
        raise DataError(
            f"decomposition needs z_where (V, T, N, 4), presence (V, T, N), positions (V, T, M, 2) "
            f"and present (V, M); got {where.shape}, {presence.shape}, {positions.shape}, "
            f"{present.shape}"
        )
    r = radius * side
    centres, on = slot_centres(where, side), presence > presence_threshold
    recall, precision = _scores(centres, on, positions, present, r)
    counts, truth = on.sum(-1), present.sum(-1)[:, None]  # (V, T), (V, 1)
    # chance: the same number of present slots per frame, at uniformly random centres
    rng = np.random.default_rng(seed)
    random_centres = rng.uniform(0, side, centres.shape)
    chance_recall, chance_precision = _scores(random_centres, on, positions, present, r)
    values, freq = np.unique(np.broadcast_to(truth, counts.shape), return_counts=True)
    spread = centres.std(axis=1).mean(axis=-1) / side  # (V, N): per slot over frames
    return {
        "recall": recall,
        "chance_recall": chance_recall,
        "precision": precision,
        "chance_precision": chance_precision,
        "count_accuracy": float((counts == truth).mean()),
        "chance_count_accuracy": float(freq.max() / freq.sum()),  # the most common count
        "centre_spread": float(spread.mean()),
        "identity_switches": identity_switches(centres, on, positions, present, r),
        "present_slots_per_frame": float(counts.mean()),
        "objects_per_frame": float(truth.mean()),
    }


def identity_switches(centres, on, positions, present, radius: float) -> float:
    """Share of consecutive frame pairs, over slots on an object in both, where the nearest
    object changes (nan when no slot sits on an object in two consecutive frames)."""
    d = np.linalg.norm(centres[..., :, None, :] - positions[..., None, :, :], axis=-1)
    d = np.where(present[:, None, None, :], d, np.inf)  # (V, T, N, M)
    nearest = d.argmin(-1)  # (V, T, N)
    onto = on & (d.min(-1) <= radius)
    both = onto[:, 1:] & onto[:, :-1]
    if not both.any():
        return float("nan")
    return float((nearest[:, 1:] != nearest[:, :-1])[both].mean())
