"""Slot alignment across frames (main paper, appendix A.2, eqs. 9-10): exact, batched, in numpy.

Per video, frame after frame, the N object slots of frame t are reordered by the permutation that
minimises the summed squared distance of their content latents to the already aligned frame t-1
(frame 0 keeps its order). Small N: all N! permutations at once; larger N: Hungarian matching.
Axis order: (V, T, N, ...) with `perm[v, t, j]` = the original slot placed at aligned position j.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vidlat.errors import ConfigError, DataError
from vidlat.store.format import FieldSpec

PERM_FIELD = "perm"
AMBIGUOUS_FIELD = "ambiguous"
BRUTE_FORCE_MAX_N = 5  # measured: from N = 6 (720 permutations) the Hungarian path is faster
METHODS = ("auto", "brute", "hungarian")
# Ties within float rounding count as ties: this fraction of the frame's mean pairwise squared
# distance is added to the threshold (it matters only when the best cost is ~0, i.e. noise-free).
TIE_SCALE = 1e-9
_BLOCK = 2**21  # permutation costs evaluated per block of problems (16 MiB of float64)


@dataclass(frozen=True)
class Alignment:
    """perm: int (V, T, N) original slot at each aligned position; ambiguous: bool (V, T) best and
    second-best permutations nearly tied; cost: float64 (V, T) eq. 9 at the chosen permutation
    (0 at frame 0)."""

    perm: np.ndarray
    ambiguous: np.ndarray
    cost: np.ndarray


def align_slots(
    content: np.ndarray, *, ambiguity_tol: float = 0.05, method: str = "auto"
) -> Alignment:
    """Align the slots of content latents (V, T, N, Dc) across frames (eq. 9-10).

    Frame t is ambiguous when its second-best permutation costs at most
    `ambiguity_tol * best + TIE_SCALE * mean pairwise squared distance` more than the best one
    (never at frame 0, or with N = 1). `method`: "brute" (all N! permutations), "hungarian", or
    "auto" (brute for N <= BRUTE_FORCE_MAX_N); all are exact and give the same costs.
    """
    x = _check_content(content, ambiguity_tol, method)
    v, t, n, _ = x.shape
    perm = np.broadcast_to(np.arange(n), (v, t, n)).copy()
    cost, ambiguous = np.zeros((v, t)), np.zeros((v, t), dtype=bool)
    if t < 2 or v == 0:
        return Alignment(perm, ambiguous, cost)
    pair = pair_costs(x).reshape(-1, n, n)  # (V*(T-1), N, N): raw slot k at t-1 vs raw j at t
    brute = method == "brute" or (method == "auto" and n <= BRUTE_FORCE_MAX_N)
    match, best, second = brute_force(pair) if brute else hungarian_with_second(pair)
    tied = second - best <= ambiguity_tol * best + TIE_SCALE * pair.mean(axis=(1, 2))
    cost[:, 1:], ambiguous[:, 1:] = best.reshape(v, t - 1), tied.reshape(v, t - 1)
    # The best match to the aligned frame t-1 is the raw-to-raw match composed with perm[t-1]:
    # relabelling the rows of the cost matrix does not change which assignment is cheapest.
    match = match.reshape(v, t - 1, n)
    for i in range(1, t):
        perm[:, i] = np.take_along_axis(match[:, i - 1], perm[:, i - 1], axis=-1)
    return Alignment(perm, ambiguous, cost)


def _check_content(content: np.ndarray, tol: float, method: str) -> np.ndarray:
    x = np.asarray(content)
    if x.ndim != 4 or x.shape[2] < 1:
        raise DataError(
            f"slot content latents must be shaped (V, T, N, Dc) with N >= 1; got {x.shape}"
        )
    if not np.isfinite(x).all():
        raise DataError(
            "slot content latents hold NaN/inf, so slots cannot be aligned; check the stage-1 run "
            "for divergence"
        )
    if tol < 0 or method not in METHODS:
        raise ConfigError(
            f"ambiguity_tol must be >= 0 (got {tol}) and method one of {METHODS} (got {method!r})"
        )
    if method == "brute" and x.shape[2] > 8:
        raise ConfigError(f"brute force over {x.shape[2]}! permutations is too slow; use hungarian")
    return x


def pair_costs(content: np.ndarray) -> np.ndarray:
    """Squared distances of every slot of frame t-1 to every slot of frame t: float64
    (V, T-1, N, N), [v, t-1, k, j] = ||content[v, t-1, k] - content[v, t, j]||^2."""
    x = content.astype(np.float64)
    x = x - x.mean(axis=(1, 2), keepdims=True)  # distances are shift-free; centring cuts rounding
    sq = np.einsum("vtnd,vtnd->vtn", x, x)  # (V, T, N)
    dot = x[:, :-1] @ x[:, 1:].swapaxes(-1, -2)  # (V, T-1, N, N)
    return np.maximum(sq[:, :-1, :, None] + sq[:, 1:, None, :] - 2 * dot, 0.0)


def brute_force(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every permutation of every square cost matrix (B, N, N): the best assignment (B, N) (column
    of each row; the first in lexicographic order among exact ties), its cost (B,) and the cost of
    the second-best permutation (B,) (inf when N = 1)."""
    b, n = cost.shape[:2]
    perms = np.array(list(itertools.permutations(range(n))), dtype=np.intp)  # (K, N)
    step = max(1, _BLOCK // len(perms))
    match, best, second = np.empty((b, n), np.intp), np.empty(b), np.full(b, np.inf)
    for s in range(0, b, step):
        block = cost[s : s + step]
        total = np.zeros((len(block), len(perms)))  # (B', K)
        for row in range(n):  # same summation order for every permutation: exact ties stay ties
            total += block[:, row, perms[:, row]]
        arg = total.argmin(axis=1)
        match[s : s + step], best[s : s + step] = perms[arg], total[np.arange(len(block)), arg]
        if len(perms) > 1:
            second[s : s + step] = np.partition(total, 1, axis=1)[:, 1]
    return match, best, second


def hungarian(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost assignment of every square cost matrix (B, N, N) -> column of each row (B, N).

    Kuhn-Munkres with dual potentials in its O(N^3) shortest-augmenting-path form (the e-maxx /
    Jonker-Volgenant formulation), rows added one by one; the batch runs in lockstep, each problem
    masked out of a phase once it has found its free column.
    """
    b, n = cost.shape[:2]
    a = np.zeros((b, n + 1, n + 1))  # row 0 and column 0 are the algorithm's dummy root
    a[:, 1:, 1:] = cost
    u, v = np.zeros((b, n + 1)), np.zeros((b, n + 1))  # row and column potentials
    p = np.zeros((b, n + 1), dtype=np.intp)  # p[:, j]: row matched to column j (0: none)
    way = np.zeros((b, n + 1), dtype=np.intp)  # previous column on the shortest path
    for row in range(1, n + 1):
        p[:, 0] = row
        _add_row(a, u, v, p, way)
    match = np.empty((b, n), dtype=np.intp)
    match[np.arange(b)[:, None], p[:, 1:] - 1] = np.arange(n)
    return match


def _add_row(a: np.ndarray, u: np.ndarray, v: np.ndarray, p: np.ndarray, way: np.ndarray) -> None:
    """One Hungarian phase: grow a shortest-path tree from row p[:, 0] to a free column, update the
    potentials on the way, then flip the matching along the path (in place, every problem)."""
    b, m = p.shape
    idx = np.arange(b)
    j0 = np.zeros(b, dtype=np.intp)
    minv = np.full((b, m), np.inf)  # least reduced cost reaching each column from the tree
    used = np.zeros((b, m), dtype=bool)  # columns in the tree
    seen = np.zeros((b, m), dtype=bool)  # rows in the tree
    active = np.ones(b, dtype=bool)
    while active.any():
        used[idx, j0] |= active
        i0 = p[idx, j0]
        seen[idx, i0] |= active
        reduced = a[idx, i0] - u[idx, i0][:, None] - v  # (B, N+1)
        better = active[:, None] & ~used & (reduced < minv)
        minv = np.where(better, reduced, minv)
        np.copyto(way, j0[:, None], where=better)
        free = np.where(used, np.inf, minv)
        j1 = free.argmin(axis=1)
        delta = np.where(active, free[idx, j1], 0.0)[:, None]
        u += delta * seen
        v -= delta * used
        minv -= delta * ~used
        j0 = np.where(active, j1, j0)
        active &= p[idx, j0] != 0
    while (on_path := j0 != 0).any():  # walk back, shifting each row to the next column
        j1 = way[idx, j0]
        p[idx, j0] = np.where(on_path, p[idx, j1], p[idx, j0])
        j0 = np.where(on_path, j1, j0)


def hungarian_with_second(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As brute_force, via the Hungarian method: (assignment (B, N), best (B,), second (B,)).

    The second-best cost is exact: any other assignment is the optimal one with its columns
    permuted by some pi, costing best + sum_i D[i, pi(i)], D[i, k] = cost[i, m(k)] - cost[i, m(i)].
    Each cycle of pi adds >= 0 (optimality), so the second best changes exactly one cycle: the
    minimum-weight directed cycle of D, found by Floyd-Warshall (no negative cycles) in O(N^3).
    """
    match = hungarian(cost)
    own = np.take_along_axis(cost, match[:, :, None], axis=2)[..., 0]  # (B, N): cost[i, m(i)]
    d = np.take_along_axis(cost, np.broadcast_to(match[:, None, :], cost.shape), axis=2)
    d = d - own[:, :, None]  # (B, N, N), zero diagonal
    dist = d.copy()
    for k in range(cost.shape[1]):
        np.minimum(dist, dist[:, :, k : k + 1] + dist[:, k : k + 1, :], out=dist)
    cycle = d + dist.swapaxes(1, 2)  # edge i -> k, then the shortest path k -> i
    cycle[:, np.arange(cost.shape[1]), np.arange(cost.shape[1])] = np.inf
    best = own.sum(axis=1)
    return match, best, best + np.maximum(cycle.min(axis=(1, 2)), 0.0)


def apply_perm(x: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Reorder the slot axis: x (V, T, N, ...) -> out[v, t, j] = x[v, t, perm[v, t, j]]."""
    x, perm = np.asarray(x), np.asarray(perm)
    if perm.ndim != 3 or x.shape[:3] != perm.shape:
        raise DataError(f"a slot field shaped {x.shape} does not fit permutations {perm.shape}")
    v, t = perm.shape[:2]
    return x[np.arange(v)[:, None, None], np.arange(t)[None, :, None], perm]


def invert_perm(perm: np.ndarray) -> np.ndarray:
    """The inverse permutations (..., N): apply_perm(apply_perm(x, p), invert_perm(p)) == x."""
    return np.argsort(perm, axis=-1).astype(np.asarray(perm).dtype)


def align_fields(
    latents: Mapping[str, np.ndarray],
    slot_fields: Sequence[str],
    content_field: str,
    **kw,
) -> dict[str, np.ndarray]:
    """Align the slot fields of one chunk {field: (v, T, N, ...)} by the content field's alignment.

    Returns a new dict: the slot fields (and `content_field`) reordered, other fields as they are,
    plus "perm" int32 (v, T, N) and "ambiguous" bool (v, T). `kw` goes to align_slots.
    """
    if clash := {PERM_FIELD, AMBIGUOUS_FIELD} & set(latents):
        raise DataError(f"latents already hold {sorted(clash)}, which slot alignment adds")
    names = dict.fromkeys([content_field, *slot_fields])
    if missing := [name for name in names if name not in latents]:
        raise DataError(
            f"slot fields {missing} are not among the encoded latents {sorted(latents)}; "
            "the model's slot fields and its encode() disagree"
        )
    alignment = align_slots(latents[content_field], **kw)
    out = dict(latents)
    for name in names:
        out[name] = apply_perm(latents[name], alignment.perm)
    out[PERM_FIELD] = alignment.perm.astype(np.int32)
    out[AMBIGUOUS_FIELD] = alignment.ambiguous
    return out


def alignment_specs(n_slots: int) -> list[FieldSpec]:
    """The aux fields align_fields adds, for a slot model's store_fields()."""
    return [
        FieldSpec(PERM_FIELD, "aux", (n_slots,), dtype="int32"),
        FieldSpec(AMBIGUOUS_FIELD, "aux", (), dtype="bool"),
    ]
