"""Disentanglement probes, the main paper's Table 1 protocol, on a latent store with factors.

A probe of three fully connected layers is trained to predict a ground-truth factor of a frame from
(a) all its latents z, (b) the content latents only, (c) the pose latents only; the score from z and
the ratios z_c/z and z_p/z are reported. Groups are found by role, never by model: z_c = every
`content` field, z_p = every `pose` and `where` field, z = those plus `mask` fields (a per-slot
presence belongs to neither kind). Fields are flattened per frame ((N, D) slots -> N*D numbers).

Tasks, mapped from the paper's Moving MNIST to the store's `factor_*` arrays (written by encode):
- shape (content, accuracy): the objects' shape classes. "multiset" (default): a class per sorted
  tuple of the present objects' classes, so (disc, ring) = (ring, disc) and the empty video is a
  class of its own; "sum": the sum of the class indices, the paper's digit sum for Moving MNIST.
- background (content, accuracy): the background class.
- colour (pose, MSE, R² also): the per-frame sum over present objects of their RGB colour in [0, 1]
  (3 numbers), the paper's "sum of the pixel values of the digits".
Per-video factors are broadcast over the video's frames. For accuracy higher is better, so good
disentanglement reads z_c/z near 1 and z_p/z low; for colour MSE lower is better, so z_p/z near 1
and z_c/z large (the paper's 16.8 for its model).

Training: train-split frames (at most `max_frames`, drawn at random), inputs standardised with the
train statistics, Adam for a fixed `steps` budget; scores on test-split frames. Regression targets
are standardised for training and the MSE is reported in the factor's own units.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from vidlat.errors import StoreError
from vidlat.pipeline.configs import ProbeConfig
from vidlat.stages.common.nets import MLP
from vidlat.store.format import FACTOR_PREFIX
from vidlat.store.reader import LatentStore

GROUPS = {"z": ("content", "pose", "where", "mask"), "content": ("content",),
          "pose": ("pose", "where")}  # fmt: skip
NEEDED = ("shape_class", "present", "background_class", "colour")
TASKS = {"shape": "accuracy", "background": "accuracy", "colour": "mse"}


def latent_groups(store: LatentStore) -> dict[str, list[str]]:
    """{"z": fields, "content": fields, "pose": fields} by role, in store order."""
    fields = store.fields.items()
    return {g: [n for n, s in fields if s.role in roles] for g, roles in GROUPS.items()}


def has_factors(store: LatentStore) -> bool:
    """Does the store carry the ground-truth factors the probes and MIG need?"""
    return all(FACTOR_PREFIX + name in store.fields for name in NEEDED)


def pick_frames(
    store: LatentStore, videos: np.ndarray, most: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `most` distinct (video, frame) pairs of `videos`: int64 arrays (n,) each, in order."""
    total = len(videos) * store.n_frames
    flat = np.sort(rng.choice(total, size=min(most, total), replace=False))
    return np.asarray(videos)[flat // store.n_frames], flat % store.n_frames


def frame_latents(
    store: LatentStore, names: Sequence[str], vids: np.ndarray, frames: np.ndarray
) -> dict[str, np.ndarray]:
    """Latents of frames (vids[i], frames[i]): {field: float32 (n, numel)}, each field flattened;
    a per-video field is repeated for each of its frames."""
    ids, inverse = np.unique(vids, return_inverse=True)
    out = {}
    for name in names:
        x = store.read(name, ids).astype(np.float32)  # (v, T, *shape) or (v, *shape)
        rows = x[inverse, frames] if store.fields[name].per_frame else x[inverse]
        out[name] = rows.reshape(len(vids), -1)
    return out


def join(latents: dict[str, np.ndarray], names: Sequence[str], n: int) -> np.ndarray:
    """Fields `names` of frame_latents side by side: (n, D); (n, 0) when `names` is empty."""
    parts = [latents[name] for name in names]
    return np.concatenate(parts, 1) if parts else np.zeros((n, 0), np.float32)


def factor_targets(
    store: LatentStore, vids: np.ndarray, frames: np.ndarray, shape_task: str = "multiset"
) -> dict[str, np.ndarray]:
    """Targets of frames (vids[i], frames[i]): shape and background as hashable per-frame keys
    (object arrays / ints, (n,)), colour float32 (n, 3). StoreError without factors."""
    if not has_factors(store):
        missing = [n for n in NEEDED if FACTOR_PREFIX + n not in store.fields]
        raise StoreError(
            f"{store.path} has no ground-truth factors {missing}; the probes need a dataset with "
            "factors (vidlat data synth or moving-mnist) encoded into the store"
        )
    ids, inverse = np.unique(vids, return_inverse=True)
    read = {n: store.read(FACTOR_PREFIX + n, ids)[inverse] for n in NEEDED}
    present, classes = read["present"].astype(bool), read["shape_class"]
    if shape_task == "sum":
        shape = np.where(present, classes, 0).sum(1)
    else:
        shape = np.empty(len(vids), object)  # 1-D of tuples (np.array would make it 2-D)
        shape[:] = [tuple(sorted(c[p].tolist())) for c, p in zip(classes, present, strict=True)]
    colour = (read["colour"][np.arange(len(vids)), frames] * present[..., None]).sum(1)
    return {
        "shape": shape,
        "background": read["background_class"].astype(np.int64),
        "colour": colour.astype(np.float32),
    }


def class_ids(*label_sets: np.ndarray) -> list[np.ndarray]:
    """Map labels (any hashable values) of several arrays to shared ids 0..C-1 (sorted by value)."""
    values = sorted({v for labels in label_sets for v in labels.tolist()}, key=repr)
    lookup = {v: i for i, v in enumerate(values)}
    return [np.array([lookup[v] for v in labels.tolist()], np.int64) for labels in label_sets]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: for MLPs this small, intra-op threads cost more than they save
    (20x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fit_probe(x: np.ndarray, y: np.ndarray, classes: int, cfg: ProbeConfig) -> torch.nn.Module:
    """Train a 3-layer MLP on standardised inputs x (n, D): classes > 0 -> cross-entropy on int
    labels (n,); classes == 0 -> MSE on float targets (n, k). CPU; returns it in eval mode."""
    torch.manual_seed(cfg.seed)
    out_dim = classes or y.shape[1]
    probe = MLP(x.shape[1], [cfg.hidden, cfg.hidden], out_dim)
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.lr)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.steps):
        rows = torch.randint(len(xs), (cfg.batch_size,), generator=gen)
        logits = probe(xs[rows])  # (B, out_dim)
        loss = F.cross_entropy(logits, ys[rows]) if classes else F.mse_loss(logits, ys[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return probe.eval()


def score(groups: dict[str, tuple], metric: str, cfg: ProbeConfig, y_tr, y_te) -> dict:
    """One task's scores from each latent group {name: (x_train, x_test)}, plus chance level."""
    if metric == "accuracy":
        y_tr, y_te = class_ids(y_tr, y_te)
        classes = int(max(y_tr.max(), y_te.max())) + 1
        chance = float(np.mean(y_te == np.bincount(y_tr).argmax()))  # the commonest train class
        result: dict = {"metric": metric, "chance": chance, "classes": classes}
        target, mean, std = y_tr, 0.0, 1.0
    else:
        classes, mean, std = 0, y_tr.mean(0), y_tr.std(0) + 1e-8
        chance = float(((y_te - mean) ** 2).mean())  # always predicting the train mean
        result = {"metric": metric, "chance": chance, "r2": {}}
        target = ((y_tr - mean) / std).astype(np.float32)
    for name, (x_tr, x_te) in groups.items():
        if x_tr.shape[1] == 0:  # the model has no field of this group
            result[name] = None
            continue
        probe = fit_probe(x_tr, target, classes, cfg)
        with torch.no_grad():
            pred = probe(torch.from_numpy(x_te)).numpy()
        if classes:
            result[name] = float(np.mean(pred.argmax(1) == y_te))
            continue
        pred = pred * std + mean
        result[name] = float(((pred - y_te) ** 2).mean())
        ss_tot = np.maximum(((y_te - y_te.mean(0)) ** 2).sum(0), 1e-12)
        result["r2"][name] = float((1 - ((pred - y_te) ** 2).sum(0) / ss_tot).mean())
    return result | ratios(result)


def ratios(result: dict) -> dict[str, float | None]:
    """z_c/z and z_p/z of one task's scores (None where a score is missing or z is 0)."""
    z = result.get("z")
    out = {}
    for key, group in (("z_c/z", "content"), ("z_p/z", "pose")):
        value = result.get(group)
        out[key] = None if value is None or not z else float(value / z)
    return out


def standardised_groups(
    store: LatentStore, train: tuple, test: tuple
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{group: (x_train, x_test)} of the frames `train`, `test` ((vids, frames) each), every feature
    standardised with the train mean and std (std floored, so constant features stay finite)."""
    names = latent_groups(store)
    lat_tr, lat_te = (frame_latents(store, names["z"], *frames) for frames in (train, test))
    out = {}
    for group, fields in names.items():
        x_tr, x_te = join(lat_tr, fields, len(train[0])), join(lat_te, fields, len(test[0]))
        mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
        out[group] = ((x_tr - mean) / std, (x_te - mean) / std)
    return out


def run_probes(store: LatentStore, cfg: ProbeConfig) -> dict:
    """Table 1 of the main paper for `store`: {task: {metric, z, content, pose, z_c/z, z_p/z,
    chance, [classes | r2]}} plus {"frames": {"train": n, "test": n}}. Runs on the CPU."""
    split = store.split
    if not len(split.get("train", [])) or not len(split.get("test", [])):
        raise StoreError(f"{store.path} needs train and test videos for the probes")
    rng = np.random.default_rng(cfg.seed)
    train = pick_frames(store, split["train"], cfg.max_frames, rng)
    test = pick_frames(store, split["test"], cfg.max_frames, rng)
    groups = standardised_groups(store, train, test)
    y_tr = factor_targets(store, *train, cfg.shape_task)
    y_te = factor_targets(store, *test, cfg.shape_task)
    out: dict = {"frames": {"train": len(train[0]), "test": len(test[0])}}
    with one_thread():
        for task, metric in TASKS.items():
            out[task] = score(groups, metric, cfg, y_tr[task], y_te[task])
    return out
