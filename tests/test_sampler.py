"""Window sampling from a latent store: windows stay in one video of the split, in both modes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vidlat.errors import StoreError
from vidlat.store.format import FieldSpec
from vidlat.store.reader import LatentStore
from vidlat.store.sampler import WindowSampler
from vidlat.store.writer import create_store

V, T, VPC = 22, 10, 3  # 8 chunks, the last one holding 1 video
TRAIN = [0, 2, 3, 5, 7, 8, 11, 13, 14, 17, 19, 20, 21]
VAL = sorted(set(range(V)) - set(TRAIN))
FIELDS = [
    FieldSpec("pose", "pose", (2,)),  # value video*16 + frame (exact in float16), and its negative
    FieldSpec("content", "content", (1,), per_frame=False),  # value video
    FieldSpec("perm", "aux", (3,), dtype="int64"),  # not a latent role: not sampled by default
]
STREAM = 100  # bytes: forces streaming mode (one video is 84 bytes)
BIG = 2**30


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("s") / "s.zarr", "float32")


def build_store(path, dtype: str) -> LatentStore:
    writer = create_store(
        path,
        FIELDS,
        V,
        T,
        videos_per_chunk=VPC,
        dtype=dtype,
        attrs={"split": {"train": TRAIN, "val": VAL, "test": []}},
    )
    for i in range(writer.n_chunks):
        start, stop = writer.chunk_range(i)
        code = np.arange(start, stop)[:, None] * 16.0 + np.arange(T)  # (v, T)
        writer.write_chunk(
            i,
            {
                "pose": np.stack([code, -code], axis=-1),
                "content": np.arange(start, stop, dtype=np.float64)[:, None],
                "perm": np.zeros((stop - start, T, 3), dtype=np.int64),
            },
        )
    writer.mark_complete()
    return LatentStore.open(path)


def windows(batch: dict[str, np.ndarray], window: int) -> list[tuple[int, int]]:
    """(video, start) of every window, after checking it is consecutive frames of one video."""
    pose, content = batch["pose"], batch["content"]
    assert pose.dtype == np.float32 and pose.shape[1:] == (window, 2)
    assert content.shape == (pose.shape[0], window, 1)
    found = []
    for b in range(pose.shape[0]):
        video, start = divmod(int(pose[b, 0, 0]), 16)
        np.testing.assert_array_equal(pose[b, :, 0], video * 16 + start + np.arange(window))
        np.testing.assert_array_equal(pose[b, :, 1], -pose[b, :, 0])
        np.testing.assert_array_equal(content[b, :, 0], video)  # per-video field repeated
        assert 0 <= start <= T - window
        found.append((video, start))
    return found


@pytest.mark.parametrize("budget", [BIG, STREAM])
@pytest.mark.parametrize("split,members", [("train", TRAIN), ("val", VAL)])
def test_windows_stay_in_one_video_of_the_split(store, budget, split, members):
    sampler = WindowSampler(
        store, window=4, batch_size=16, split=split, memory_budget=budget, buffer_chunks=2
    )
    assert sampler.in_memory == (budget == BIG)
    assert set(sampler.sample()) == {"pose", "content"}  # latent roles only by default
    seen = [w for _ in range(40) for w in windows(sampler.sample(), 4)]
    assert {v for v, _ in seen} == set(members)
    assert {s for _, s in seen} == set(range(T - 4 + 1))  # every start is reachable


def test_in_memory_size_estimate(store):
    sampler = WindowSampler(store, window=3, batch_size=2)
    assert sampler.nbytes == len(TRAIN) * (T * 2 + 1) * 4
    assert not WindowSampler(
        store, window=3, batch_size=2, memory_budget=sampler.nbytes - 1
    ).in_memory
    assert WindowSampler(store, window=3, batch_size=2, memory_budget=sampler.nbytes).in_memory


def test_streaming_uses_every_video_each_epoch(store):
    sampler = WindowSampler(
        store, window=5, batch_size=7, memory_budget=STREAM, buffer_chunks=2, windows_per_video=2
    )
    assert len(sampler._slots) == 2  # only two chunks are ever held
    seen: list[int] = []
    # Once the third chunk order is drawn, every chunk of the first epoch has been read and used up.
    for _ in range(100):  # 13 videos x 2 windows per epoch: a few batches each
        seen += [v for v, _ in windows(sampler.sample(), 5)]
        assert sum(s is not None for s in sampler._slots) <= 2
        if sampler.epoch == 2:
            break
    assert sampler.epoch == 2
    counts = np.bincount(seen, minlength=V)
    assert set(np.flatnonzero(counts)) == set(TRAIN)
    assert counts[TRAIN].min() >= 2  # each buffered video hands out its 2 windows before eviction


def test_same_seed_same_batches_other_seed_other_batches(store):
    for budget in (BIG, STREAM):
        a, b, c = (
            WindowSampler(store, window=3, batch_size=5, memory_budget=budget, seed=s)
            for s in (7, 7, 8)
        )
        batches_a = [a.sample()["pose"] for _ in range(6)]
        batches_b = [b.sample()["pose"] for _ in range(6)]
        batches_c = [c.sample()["pose"] for _ in range(6)]
        np.testing.assert_array_equal(np.stack(batches_a), np.stack(batches_b))
        assert not np.array_equal(np.stack(batches_a), np.stack(batches_c))


def test_ranks_draw_different_windows_from_disjoint_chunks(store):
    kw = {"window": 3, "batch_size": 8, "seed": 3, "world_size": 2}
    r0, r1 = (WindowSampler(store, rank=r, **kw) for r in (0, 1))
    assert not np.array_equal(r0.sample()["pose"], r1.sample()["pose"])
    s0, s1 = (WindowSampler(store, rank=r, memory_budget=STREAM, **kw) for r in (0, 1))
    chunks = [set(), set()]
    for _ in range(30):
        for r, s in enumerate((s0, s1)):
            chunks[r] |= {v // VPC for v, _ in windows(s.sample(), 3)}
    assert not chunks[0] & chunks[1]
    assert chunks[0] | chunks[1] == {v // VPC for v in TRAIN}
    # More ranks than chunks of the split: a rank with no share samples from all of them.
    lone = WindowSampler(store, window=3, batch_size=4, memory_budget=STREAM, rank=9, world_size=10)
    assert lone.chunks.tolist() == sorted({v // VPC for v in TRAIN})


def test_window_bounds_and_float16(tmp_path):
    store = build_store(tmp_path / "h.zarr", "float16")
    full = WindowSampler(store, window=T, batch_size=3, memory_budget=STREAM)
    assert {s for v, s in windows(full.sample(), T)} == {0}  # the whole video, from frame 0
    with pytest.raises(StoreError, match=r"window of 11 frames .* videos of 10 frames"):
        WindowSampler(store, window=T + 1, batch_size=3)


def test_refusals(store, tmp_path):
    with pytest.raises(
        StoreError, match=r"no split 'dev'; its splits are \['test', 'train', 'val'\]"
    ):
        WindowSampler(store, window=3, batch_size=2, split="dev")
    with pytest.raises(StoreError, match="split 'test' .* is empty"):
        WindowSampler(store, window=3, batch_size=2, split="test")
    with pytest.raises(StoreError, match=r"no field \['nope'\]"):
        WindowSampler(store, window=3, batch_size=2, fields=["pose", "nope"])
    with pytest.raises(StoreError, match="rank 2 is not in 0..1"):
        WindowSampler(store, window=3, batch_size=2, rank=2, world_size=2)
    aux = WindowSampler(store, window=3, batch_size=2, fields=["perm"]).sample()
    assert (
        list(aux) == ["perm"] and aux["perm"].shape == (2, 3, 3) and aux["perm"].dtype == np.float32
    )

    writer = create_store(
        tmp_path / "p.zarr", FIELDS, V, T, videos_per_chunk=VPC, attrs={"split": {"train": TRAIN}}
    )
    partial = LatentStore.open(writer.path, require_complete=False)
    with pytest.raises(StoreError, match=r"lacks chunks \[0, 1, 2"):
        WindowSampler(partial, window=3, batch_size=2)


@pytest.mark.parametrize("budget", [BIG, STREAM])
def test_state_dict_resumes_exactly(store, budget):
    kw = {"window": 4, "batch_size": 5, "memory_budget": budget, "buffer_chunks": 2, "seed": 1}
    a = WindowSampler(store, **kw)
    for _ in range(3):
        a.sample()
    state = json.loads(json.dumps(a.state_dict()))  # it must survive a JSON file
    expected = [a.sample()["pose"] for _ in range(8)]
    b = WindowSampler(store, **kw)
    b.load_state_dict(state)
    np.testing.assert_array_equal(
        np.stack([b.sample()["pose"] for _ in range(8)]), np.stack(expected)
    )
