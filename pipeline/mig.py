"""Mutual information gap between ground-truth factors and latent groups (MIPAE, its eq. 8).

    MIG = 0.5 / H(f_c) (I(f_c; z_c) - I(f_c; z_p)) + 0.5 / H(f_p) (I(f_p; z_p) - I(f_p; z_c))

f_c are content factors (constant over a video), f_p pose factors (varying per frame); z_c is every
latent field of role `content`, z_p every field of role `pose` or `where`. 1 means each kind of
factor is fully known from its own group and not at all from the other; 0 means no separation.

Estimators (the ones MIPAE cites):
- I(f; z) between a discrete factor and a continuous latent *vector* with the k-nearest-neighbour
  estimator of Ross 2014 (PLoS ONE 9(2) e87357): I = ψ(n) - <ψ(n_f)> + ψ(k) - <ψ(m)>, where for each
  sample the distance d to its k-th nearest neighbour among samples of the same factor value is
  found and m counts all samples within d. Euclidean distance on latents standardised per dimension;
  a 1e-6 jitter breaks exact ties. Samples whose factor value occurs once are left out.
- H(f) with Grassberger's 2003 estimator (arXiv physics/0307138), less biased than the plug-in one.
- Several factors of one kind are averaged: each term of eq. 8 becomes a mean over factors of
  (I(f; own group) - I(f; other group)) / H(f).
- Continuous factors are discretised into `bins` equal-frequency bins first (pose factors here).

Also reported: the original per-dimension MIG of Chen et al. 2018, with every latent dimension
discretised into `dim_bins` equal-frequency bins and plug-in MI: per factor, the gap between the two
dimensions most informative about it over H(f), averaged over factors.

One sample is one frame of a distinct video, so that latents that merely identify a video cannot
look informative about a per-video factor through their neighbours in the same video.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from vidlat.errors import DataError, StoreError
from vidlat.pipeline.configs import MigConfig
from vidlat.pipeline.probes import class_ids, factor_targets, frame_latents, join, latent_groups
from vidlat.store.format import FACTOR_PREFIX
from vidlat.store.reader import LatentStore

JITTER = 1e-6  # relative to unit-variance latents; far below any real latent difference
ROW_BLOCK = 1024  # rows of the distance matrix computed at once (memory ~ ROW_BLOCK * n floats)


def _digamma(x: np.ndarray | float) -> np.ndarray:
    return torch.special.digamma(torch.as_tensor(x, dtype=torch.float64)).numpy()


def entropy(labels: np.ndarray) -> float:
    """Grassberger (2003) entropy estimate in nats of discrete labels (n,):
    H = ln n - 1/n Σ_i n_i G(n_i), G(m) = ψ(m) + ½ (-1)^m (ψ((m+1)/2) - ψ(m/2))."""
    _, counts = np.unique(labels, return_counts=True)
    c = counts.astype(np.float64)
    sign = np.where(counts % 2 == 0, 1.0, -1.0)
    g = _digamma(c) + 0.5 * sign * (_digamma((c + 1) / 2) - _digamma(c / 2))
    return float(max(np.log(c.sum()) - (c * g).sum() / c.sum(), 0.0))


def equal_frequency_bins(values: np.ndarray, bins: int) -> np.ndarray:
    """Discretise values (n,) into at most `bins` classes of about equal counts: int64 (n,) ids.

    Values with at most `bins` distinct levels keep exactly those levels; ties never split."""
    levels, coded = np.unique(values, return_inverse=True)
    if len(levels) > bins:
        edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        coded = np.unique(np.searchsorted(edges, values, side="right"), return_inverse=True)[1]
    return coded.reshape(-1).astype(np.int64)


def standardise(z: np.ndarray, seed: int = 0) -> torch.Tensor:
    """(n, D) -> float64 tensor, each dimension at mean 0 and std 1 (constant ones left at 0),
    plus a tiny seeded jitter that breaks exact ties between samples."""
    x = torch.as_tensor(np.asarray(z, dtype=np.float64))
    x = (x - x.mean(0)) / x.std(0, unbiased=False).clamp_min(1e-12)
    gen = torch.Generator().manual_seed(seed)
    return x + JITTER * torch.randn(x.shape, generator=gen, dtype=torch.float64)


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (n, n) of rows of x (n, D), the diagonal set to +inf (no self-match)."""
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return d


def mutual_information(labels: np.ndarray, dist: torch.Tensor, k: int = 3) -> float:
    """Ross (2014) kNN estimate in nats of I(f; z), discrete labels (n,), distances (n, n) of z.

    Clipped at 0: the estimator can dip slightly below it when f and z are independent."""
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    keep = counts[inverse] > 1  # a lone value has no same-value neighbour
    if keep.sum() < 2:
        return 0.0
    idx = torch.from_numpy(np.flatnonzero(keep))
    lab = torch.from_numpy(inverse[keep])
    n_f = torch.from_numpy(counts[inverse[keep]])
    k_i = torch.clamp(n_f - 1, max=k)  # fewer neighbours where the value is rare
    d = dist if keep.all() else dist[idx][:, idx]  # (n', n')
    m = torch.empty(len(idx), dtype=torch.float64)
    for start in range(0, len(idx), ROW_BLOCK):
        rows = slice(start, start + ROW_BLOCK)
        within = d[rows].masked_fill(lab[rows, None] != lab[None, :], float("inf"))
        nearest = within.topk(int(k_i.max()), dim=1, largest=False).values  # (b, k), ascending
        radius = nearest.gather(1, (k_i[rows] - 1)[:, None])  # (b, 1): the k-th same-value one
        m[rows] = (d[rows] <= radius).sum(1).double()  # includes the k-th neighbour itself
    n = len(idx)
    mi = _digamma(n) - _digamma(n_f).mean() + _digamma(k_i).mean() - _digamma(m).mean()
    return float(max(mi, 0.0))


def mig_eq8(
    content_factors: Mapping[str, np.ndarray],
    pose_factors: Mapping[str, np.ndarray],
    z_content: np.ndarray,
    z_pose: np.ndarray,
    k: int = 3,
    seed: int = 0,
) -> dict:
    """MIPAE eq. 8 from discrete factors {name: (n,)} and latent groups (n, Dc), (n, Dp).

    Returns {"mig", "content": {name: {"H", "I_own", "I_other"}}, "pose": {...}} in nats."""
    if not content_factors or not pose_factors:
        raise DataError("MIG needs at least one content factor and one pose factor")
    dist = {
        "content": pairwise_distances(standardise(z_content, seed)),
        "pose": pairwise_distances(standardise(z_pose, seed + 1)),
    }
    out: dict = {"content": {}, "pose": {}}
    terms = {}
    for kind, factors, other in (
        ("content", content_factors, "pose"),
        ("pose", pose_factors, "content"),
    ):
        gaps = []
        for name, labels in factors.items():
            h = entropy(labels)
            own = mutual_information(labels, dist[kind], k)
            cross = mutual_information(labels, dist[other], k)
            out[kind][name] = {"H": h, "I_own": own, "I_other": cross}
            gaps.append((own - cross) / h if h > 0 else 0.0)
        terms[kind] = float(np.mean(gaps))
    out["mig"] = 0.5 * terms["content"] + 0.5 * terms["pose"]
    return out


def discrete_mi(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information in nats of two discrete label arrays (n,)."""
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    joint = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(joint, (ia, ib), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / outer[nz])).sum())


def mig_per_dimension(factors: Mapping[str, np.ndarray], z: np.ndarray, bins: int = 20) -> dict:
    """Chen et al. (2018) MIG: per factor, (I of the best dim - I of the second) / H(f), averaged.

    factors {name: (n,) discrete}, z (n, D) with D >= 2. Returns {"mig", "per_factor": {name: gap}}.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise DataError(f"per-dimension MIG needs latents (n, D) with D >= 2, got {z.shape}")
    coded = [equal_frequency_bins(z[:, j], bins) for j in range(z.shape[1])]
    gaps = {}
    for name, labels in factors.items():
        h = entropy(labels)
        mi = sorted((discrete_mi(labels, c) for c in coded), reverse=True)
        gaps[name] = (mi[0] - mi[1]) / h if h > 0 else 0.0
    return {"mig": float(np.mean(list(gaps.values()))), "per_factor": gaps}


def pose_factors(
    store: LatentStore, vids: np.ndarray, frames: np.ndarray, colour: np.ndarray, bins: int
) -> dict:
    """Discretised per-frame pose factors: the summed colour (n, 3) of the present objects and,
    when the store has positions, their summed centre (x, y); each {name: int64 (n,)}."""
    values = {f"colour_{c}": colour[:, i] for i, c in enumerate("rgb")}
    if FACTOR_PREFIX + "position" in store.fields:
        ids, inverse = np.unique(vids, return_inverse=True)
        present = store.read(FACTOR_PREFIX + "present", ids)[inverse].astype(bool)  # (n, N)
        pos = store.read(FACTOR_PREFIX + "position", ids)[inverse, frames]  # (n, N, 2)
        summed = (pos * present[..., None]).sum(1)
        values |= {"position_x": summed[:, 0], "position_y": summed[:, 1]}
    return {name: equal_frequency_bins(v, bins) for name, v in values.items()}


def run_mig(store: LatentStore, cfg: MigConfig, shape_task: str = "multiset") -> dict:
    """MIG (eq. 8) and per-dimension MIG of `store` from one random frame of each of up to
    `cfg.samples` videos. StoreError when the store has no ground-truth factors."""
    rng = np.random.default_rng(cfg.seed)
    vids = np.sort(rng.choice(store.n_videos, min(cfg.samples, store.n_videos), replace=False))
    frames = rng.integers(0, store.n_frames, size=len(vids))
    targets = factor_targets(store, vids, frames, shape_task)
    content = {name: class_ids(targets[name])[0] for name in ("shape", "background")}
    pose = pose_factors(store, vids, frames, targets["colour"], cfg.bins)
    names = latent_groups(store)
    latents = frame_latents(store, names["z"], vids, frames)
    z = {g: join(latents, fields, len(vids)) for g, fields in names.items()}
    if not z["content"].shape[1] or not z["pose"].shape[1]:
        raise StoreError(f"{store.path} needs content and pose latents for MIG; it has {names}")
    result = mig_eq8(content, pose, z["content"], z["pose"], cfg.k, cfg.seed)
    result["per_dimension"] = mig_per_dimension(content | pose, z["z"], cfg.dim_bins)
    result["samples"] = len(vids)
    return result
