"""Slot alignment: known shuffles recovered, exact (brute force == Hungarian), ties, contracts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vidlat.errors import ConfigError, DataError
from vidlat.stages.stage1.hierarchical.align import (
    AMBIGUOUS_FIELD,
    PERM_FIELD,
    align_fields,
    align_slots,
    alignment_specs,
    apply_perm,
    brute_force,
    hungarian,
    hungarian_with_second,
    invert_perm,
)
from vidlat.store.format import FieldSpec
from vidlat.store.reader import LatentStore
from vidlat.store.writer import create_store


def shuffled_objects(v=5, t=7, n=3, dc=16, noise=0.01, seed=0, twins=False):
    """Content of n well-separated objects per video, constant in time plus noise, with the slots
    of every frame shuffled: (raw (V, T, N, Dc), shuffles (V, T, N)) where
    raw[v, t, j] = object shuffles[v, t, j] of video v, plus its noise at t. `twins`: objects 0
    and 1 are identical, their noise too, so their slots are bitwise equal in every frame."""
    rng = np.random.default_rng(seed)
    objects = rng.normal(size=(v, 1, n, dc)) + noise * rng.normal(size=(v, t, n, dc))
    if twins:
        objects[:, :, 1] = objects[:, :, 0]
    shuffles = np.argsort(rng.random((v, t, n)), axis=-1)
    return apply_perm(objects, shuffles).astype(np.float32), shuffles


def naive_align(content: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 9-10 literally: each video, each frame, every permutation against the aligned t-1."""
    v, t, n, _ = content.shape
    x = content.astype(np.float64)
    perm, cost = np.zeros((v, t, n), dtype=int), np.zeros((v, t))
    perm[:, 0] = np.arange(n)
    for i, j in itertools.product(range(v), range(1, t)):
        prev = x[i, j - 1, perm[i, j - 1]]
        costs = {
            p: ((prev - x[i, j, list(p)]) ** 2).sum() for p in itertools.permutations(range(n))
        }
        best = min(costs, key=costs.get)
        perm[i, j], cost[i, j] = best, costs[best]
    return perm, cost


@pytest.mark.parametrize("n", [2, 3, 6, 8])
def test_recovers_known_shuffles(n):
    raw, shuffles = shuffled_objects(n=n)
    result = align_slots(raw)
    aligned = apply_perm(raw, result.perm)
    # perm is the composition of the known shuffles: slot j of every frame holds the object that
    # frame 0 held at j, i.e. perm[t] = shuffles[t]^-1 o shuffles[0].
    expected = np.take_along_axis(invert_perm(shuffles), np.repeat(shuffles[:, :1], 7, 1), -1)
    np.testing.assert_array_equal(result.perm, expected)
    np.testing.assert_allclose(aligned, np.repeat(aligned[:, :1], 7, axis=1), atol=0.1)
    np.testing.assert_array_equal(result.perm[:, 0], np.broadcast_to(np.arange(n), (5, n)))
    assert not result.ambiguous.any()
    assert (result.cost[:, 0] == 0).all()
    # noise 0.01 in 16 dims for both frames: about n * 2 * 16 * 1e-4 per frame
    assert 0 < result.cost[:, 1:].mean() < n * 2 * 16 * 1e-4 * 2


@pytest.mark.parametrize("method", ["brute", "hungarian"])
def test_matches_naive_frame_by_frame(method):
    content = np.random.default_rng(1).normal(size=(3, 6, 4, 5))  # no structure, no ties
    perm, cost = naive_align(content)
    result = align_slots(content, method=method)
    np.testing.assert_array_equal(result.perm, perm)
    np.testing.assert_allclose(result.cost, cost, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n", [1, 3, 7, 8])
def test_hungarian_is_exact(n):
    cost = np.random.default_rng(n).random((12, n, n))
    match_b, best_b, second_b = brute_force(cost)
    match_h, best_h, second_h = hungarian_with_second(cost)
    np.testing.assert_allclose(best_h, best_b, rtol=1e-12)
    np.testing.assert_allclose(second_h, second_b, rtol=1e-12)
    assert (np.sort(match_h, axis=1) == np.arange(n)).all()  # a permutation
    np.testing.assert_allclose(np.take_along_axis(cost, match_h[..., None], 2).sum((1, 2)), best_b)
    np.testing.assert_array_equal(hungarian(cost), match_h)


def test_hungarian_exact_with_ties():
    cost = np.random.default_rng(2).integers(0, 3, size=(200, 7, 7)).astype(np.float64)
    _, best_b, second_b = brute_force(cost)
    _, best_h, second_h = hungarian_with_second(cost)
    np.testing.assert_array_equal(best_h, best_b)
    np.testing.assert_array_equal(second_h, second_b)


@pytest.mark.parametrize("method", ["brute", "hungarian"])
def test_batched_equals_one_video_at_a_time(method):
    raw, _ = shuffled_objects(v=6, n=5, noise=0.5, seed=3)
    whole = align_slots(raw, method=method)
    for i in range(len(raw)):
        one = align_slots(raw[i : i + 1], method=method)
        np.testing.assert_array_equal(one.perm[0], whole.perm[i])
        np.testing.assert_array_equal(one.ambiguous[0], whole.ambiguous[i])
        np.testing.assert_allclose(one.cost[0], whole.cost[i], rtol=1e-12)


@pytest.mark.parametrize("n", [3, 7])  # brute force and Hungarian paths
def test_ambiguous_when_two_objects_are_identical(n):
    raw, _ = shuffled_objects(n=n, seed=4, twins=True)
    result = align_slots(raw)
    assert result.ambiguous[:, 1:].all()
    assert not result.ambiguous[:, 0].any()
    assert not align_slots(shuffled_objects(n=n, seed=4)[0]).ambiguous.any()


def test_ambiguity_rule_by_hand():
    # N = 2 scalars: frame 0 at (0, 1), frame 1 at (0.4, 0.6). Identity costs 0.4^2 + 0.4^2 =
    # 0.32, the swap 0.6^2 + 0.6^2 = 0.72: a gap of 0.4 = 1.25 * best.
    content = np.array([[[[0.0], [1.0]], [[0.4], [0.6]]]])  # (1, 2, 2, 1)
    for method in ("brute", "hungarian"):
        result = align_slots(content, ambiguity_tol=1.2, method=method)
        np.testing.assert_allclose(result.cost, [[0.0, 0.32]])
        np.testing.assert_array_equal(result.perm, [[[0, 1], [0, 1]]])
        assert not result.ambiguous.any()
        assert align_slots(content, ambiguity_tol=1.3, method=method).ambiguous[0, 1]


def test_apply_and_invert_round_trip():
    rng = np.random.default_rng(6)
    perm = np.argsort(rng.random((4, 5, 6)), axis=-1).astype(np.int32)
    x = rng.normal(size=(4, 5, 6, 3, 2))
    out = apply_perm(x, perm)
    assert out.shape == x.shape
    np.testing.assert_array_equal(out[2, 3, 1], x[2, 3, perm[2, 3, 1]])
    np.testing.assert_array_equal(apply_perm(out, invert_perm(perm)), x)
    np.testing.assert_array_equal(invert_perm(invert_perm(perm)), perm)
    assert invert_perm(perm).dtype == np.int32
    with pytest.raises(DataError, match="does not fit"):
        apply_perm(x[:, :, :5], perm)


def test_single_slot_and_single_frame():
    content = np.arange(12, dtype=np.float32).reshape(2, 3, 1, 2)  # N = 1
    result = align_slots(content)
    assert (result.perm == 0).all() and not result.ambiguous.any()
    np.testing.assert_allclose(result.cost, [[0, 8, 8], [0, 8, 8]])  # (2^2 + 2^2) per step
    one = align_slots(np.ones((2, 1, 3, 4)))  # T = 1: nothing to align
    np.testing.assert_array_equal(one.perm, np.broadcast_to(np.arange(3), (2, 1, 3)))
    assert (one.cost == 0).all() and not one.ambiguous.any()


def chunk_latents(v=3, t=4, n=3):
    raw, _ = shuffled_objects(v=v, t=t, n=n, dc=8, seed=7)
    rng = np.random.default_rng(8)
    return {
        "content": raw,
        "pose": rng.normal(size=(v, t, n, 2)).astype(np.float32),
        "presence": rng.random((v, t, n)).astype(np.float32),
        "background": rng.normal(size=(v, t, 5)).astype(np.float32),
    }


def test_align_fields_contract():
    latents = chunk_latents()
    before = {k: a.copy() for k, a in latents.items()}
    out = align_fields(latents, ["pose", "presence"], "content")
    perm = align_slots(latents["content"]).perm
    assert set(out) == {*latents, PERM_FIELD, AMBIGUOUS_FIELD}
    assert out[PERM_FIELD].dtype == np.int32 and out[PERM_FIELD].shape == (3, 4, 3)
    assert out[AMBIGUOUS_FIELD].dtype == bool and out[AMBIGUOUS_FIELD].shape == (3, 4)
    np.testing.assert_array_equal(out[PERM_FIELD], perm)
    for name in ("content", "pose", "presence"):
        np.testing.assert_array_equal(out[name], apply_perm(latents[name], perm))
        assert out[name].dtype == np.float32
    assert out["background"] is latents["background"]
    for k, a in before.items():  # the input dict and its arrays are left as they were
        np.testing.assert_array_equal(latents[k], a)
    with pytest.raises(DataError, match="not among"):
        align_fields(latents, ["pose", "mask"], "content")
    with pytest.raises(DataError, match="already hold"):
        align_fields(out, ["pose"], "content")


def test_aux_fields_round_trip_through_store(tmp_path):
    latents = align_fields(chunk_latents(v=5), ["pose", "presence"], "content")
    latents[AMBIGUOUS_FIELD][1, 2] = True  # a flag to find again
    fields = [
        FieldSpec("content", "content", (3, 8)),
        FieldSpec("pose", "pose", (3, 2)),
        FieldSpec("presence", "mask", (3,)),
        FieldSpec("background", "content", (5,)),
        *alignment_specs(3),
    ]
    writer = create_store(tmp_path / "s.zarr", fields, 5, 4, videos_per_chunk=2)
    for i in range(writer.n_chunks):
        start, stop = writer.chunk_range(i)
        writer.write_chunk(i, {k: a[start:stop] for k, a in latents.items()})
    writer.mark_complete()
    store = LatentStore.open(tmp_path / "s.zarr")
    for name in (PERM_FIELD, AMBIGUOUS_FIELD, "pose"):
        back = store.read(name, slice(None))
        assert back.dtype == latents[name].dtype
        np.testing.assert_array_equal(back, latents[name])


def test_refusals():
    with pytest.raises(DataError, match="shaped"):
        align_slots(np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match="NaN"):
        align_slots(np.full((1, 2, 2, 3), np.nan))
    with pytest.raises(ConfigError, match="ambiguity_tol"):
        align_slots(np.zeros((1, 2, 2, 3)), ambiguity_tol=-1)
    with pytest.raises(ConfigError, match="method"):
        align_slots(np.zeros((1, 2, 2, 3)), method="greedy")
