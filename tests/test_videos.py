"""Video datasets at rest: write, finish, open, read in any order, refuse what is not complete."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import zarr

from vidlat.errors import DataError, StoreError
from vidlat.store.format import vidlat_attrs
from vidlat.store.videos import VideoPool, create_videos, make_split, open_videos


def random_videos(v=5, t=3, h=6, w=6, c=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (v, t, h, w, c), dtype=np.uint8)


def write_dataset(path, frames, videos_per_chunk=2, finish=True):
    writer = create_videos(path, *frames.shape, videos_per_chunk=videos_per_chunk)
    for start in range(0, len(frames), 3):  # writes need not follow the chunking
        writer.write(start, frames[start : start + 3])
    labels = np.arange(len(frames), dtype=np.int32) * 10
    writer.write_factor("label", 0, labels[:2], "(V,) int32: a label")
    writer.write_factor("label", 2, labels[2:], "(V,) int32: a label")
    if finish:
        writer.finish("test", {"a": 1}, split={"train": [0, 1, 2], "val": [3], "test": [4]})
    return writer


def test_round_trip_attrs_and_fingerprint(tmp_path):
    frames = random_videos()
    write_dataset(tmp_path / "v.zarr", frames)
    v = open_videos(tmp_path / "v.zarr")
    assert v.shape == (5, 3, 6, 6, 3)
    assert (v.n_videos, v.n_frames, v.height, v.width, v.channels) == (5, 3, 6, 6, 3)
    assert v.array.chunks[0] == 2 and v.array.dtype == np.uint8
    assert v.source == "test" and v.attrs["source_config"] == {"a": 1} and v.attrs["complete"]
    assert v.split["val"].tolist() == [3] and v.split["train"].dtype == np.int64
    assert v.fingerprint == hashlib.sha256(frames.tobytes()).hexdigest()
    np.testing.assert_array_equal(v.read(slice(None)), frames)
    assert v.factor_names() == ["label"]
    assert v.factor_descriptions() == {"label": "(V,) int32: a label"}
    assert v.read_factor("label", [4, 1]).tolist() == [40, 10]


def test_read_slices_and_unsorted_lists_in_requested_order(tmp_path):
    frames = random_videos(v=7)
    write_dataset(tmp_path / "v.zarr", frames, videos_per_chunk=3)
    v = open_videos(tmp_path / "v.zarr")
    for idx in ([6, 0, 3, 3, 1], [2], np.array([5, 4])):
        np.testing.assert_array_equal(v.read(idx), frames[np.asarray(idx)])
    np.testing.assert_array_equal(v.read(slice(1, 6, 2)), frames[1:6:2])
    np.testing.assert_array_equal(v.read(slice(-2, None)), frames[-2:])
    assert v.read([]).shape == (0, 3, 6, 6, 3)
    with pytest.raises(DataError, match="outside 0..6"):
        v.read([0, 7])
    with pytest.raises(StoreError, match="no factor 'nope'"):
        v.read_factor("nope", [0])


def test_fingerprint_changes_with_one_pixel(tmp_path):
    frames = random_videos()
    write_dataset(tmp_path / "a.zarr", frames)
    frames[4, 2, 5, 5, 2] ^= 1
    write_dataset(tmp_path / "b.zarr", frames)
    assert (
        open_videos(tmp_path / "a.zarr").fingerprint != open_videos(tmp_path / "b.zarr").fingerprint
    )


def test_existing_path_needs_overwrite_and_only_replaces_datasets(tmp_path):
    write_dataset(tmp_path / "v.zarr", random_videos())
    with pytest.raises(StoreError, match="--overwrite"):
        create_videos(tmp_path / "v.zarr", 1, 2, 4, 4, 1)
    writer = create_videos(tmp_path / "v.zarr", 1, 2, 4, 4, 1, overwrite=True)
    writer.write(0, np.zeros((1, 2, 4, 4, 1), np.uint8))
    # written beside: the old dataset stays whole until the new one is finished
    assert open_videos(tmp_path / "v.zarr").shape == (5, 3, 6, 6, 3)
    writer.finish("test", {})
    assert open_videos(tmp_path / "v.zarr").shape == (1, 2, 4, 4, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["v.zarr"]  # nothing left beside it
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not a vidlat output.*will not replace"):
        create_videos(tmp_path / "mine", 1, 2, 4, 4, 1, overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_a_failed_overwrite_keeps_the_old_dataset(tmp_path):
    write_dataset(tmp_path / "v.zarr", random_videos())
    writer = create_videos(tmp_path / "v.zarr", 4, 2, 4, 4, 1, videos_per_chunk=2, overwrite=True)
    writer.write(0, np.zeros((2, 2, 4, 4, 1), np.uint8))
    with pytest.raises(StoreError, match=r"videos \[2, 3\]"):
        writer.finish("test", {})
    writer.abort()
    assert open_videos(tmp_path / "v.zarr").shape == (5, 3, 6, 6, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["v.zarr"]


def test_interrupted_dataset_is_refused(tmp_path):
    # a dataset written in place by an older vidlat and interrupted: marked incomplete
    write_dataset(tmp_path / "new.zarr", random_videos(), finish=False)
    work = next(tmp_path.glob(".new.zarr.new-*"))
    work.rename(tmp_path / "v.zarr")
    with pytest.raises(StoreError, match="interrupted while being written.*--overwrite"):
        open_videos(tmp_path / "v.zarr")


def test_an_unfinished_dataset_never_appears_and_a_rerun_needs_no_overwrite(tmp_path):
    writer = create_videos(tmp_path / "v.zarr", 4, 2, 4, 4, 1, videos_per_chunk=2)
    writer.write(0, np.zeros((2, 2, 4, 4, 1), np.uint8))
    with pytest.raises(StoreError, match=r"videos \[2, 3\]"):
        writer.finish("test", {})
    assert not (tmp_path / "v.zarr").exists()
    write_dataset(tmp_path / "v.zarr", random_videos())  # same process: its leftover is replaced
    assert open_videos(tmp_path / "v.zarr").n_videos == 5


def test_write_checks_dtype_shape_and_range(tmp_path):
    writer = create_videos(tmp_path / "v.zarr", 2, 2, 4, 4, 1)
    with pytest.raises(DataError, match="uint8"):
        writer.write(0, np.zeros((1, 2, 4, 4, 1), np.float32))
    with pytest.raises(DataError, match="uint8"):
        writer.write(0, np.zeros((1, 2, 4, 4, 3), np.uint8))
    with pytest.raises(StoreError, match="outside"):
        writer.write(1, np.zeros((2, 2, 4, 4, 1), np.uint8))


def test_open_refuses_what_is_not_a_video_dataset(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_videos(tmp_path / "missing.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a Zarr v3 group"):
        open_videos(tmp_path / "plain")
    blocks = {
        "none": ({}, "no 'vidlat' attribute"),
        "latents": ({"vidlat": vidlat_attrs("latents", complete=True)}, "a videos store is needed"),
        "future": ({"vidlat": {"kind": "videos", "format_version": 99}}, "format version 99"),
    }
    for name, (attrs, message) in blocks.items():
        group = zarr.open_group(tmp_path / name, mode="w", zarr_format=3)
        group.attrs.update(attrs)
        with pytest.raises(StoreError, match=message):
            open_videos(tmp_path / name)


def test_make_split_covers_every_video_once_and_is_deterministic():
    split = make_split(50, seed=3)
    together = sorted(split["train"] + split["val"] + split["test"])
    assert together == list(range(50))
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (40, 5, 5)
    assert split == make_split(50, seed=3) and split != make_split(50, seed=4)
    assert all(part == sorted(part) for part in split.values())
    for n in (3, 4, 7):
        assert all(len(part) >= 1 for part in make_split(n).values()), n
        assert sorted(sum(make_split(n).values(), [])) == list(range(n))
    assert make_split(2) == {"train": [0, 1], "val": [], "test": []}


def pool_dataset(path):
    """10 videos in chunks of 2; train: videos 0..7, so chunks 0..3."""
    frames = random_videos(v=10)
    writer = create_videos(path, *frames.shape, videos_per_chunk=2)
    writer.write(0, frames)
    writer.finish("test", {}, split={"train": list(range(8)), "val": [8], "test": [9]})
    return open_videos(path), frames


def test_video_pool_holds_the_split_or_rotating_chunks_and_resumes(tmp_path):
    videos, frames = pool_dataset(tmp_path / "v.zarr")
    kw = {"buffer_chunks": 2, "refresh_every": 3}
    whole = VideoPool(videos, "train", memory_budget=8 * frames[0].nbytes, **kw)
    assert whole.in_memory and whole.held_ids.tolist() == list(range(8))
    np.testing.assert_array_equal(whole.frames, frames[:8])
    whole.refresh(np.random.default_rng(0))
    assert whole.held_ids.tolist() == list(range(8)) and whole.held_chunks == []
    # streaming: rank r of world_size owns every world_size-th chunk (all when that is none)
    pools = [
        VideoPool(videos, "train", memory_budget=1, rank=r, world_size=2, **kw) for r in (0, 1)
    ]
    assert [p.chunks.tolist() for p in pools] == [[0, 2], [1, 3]]
    lone = VideoPool(videos, "train", memory_budget=1, rank=5, world_size=8, **kw)
    assert lone.chunks.tolist() == [0, 1, 2, 3]
    assert not lone.in_memory and lone.held_ids.size == 0  # nothing until the first draw
    rng, held = np.random.default_rng(1), []
    for draw in range(7):
        if draw == 4:
            state = json.loads(json.dumps(lone.state_dict(rng)))  # JSON-able, as checkpoints need
        lone.refresh(rng)
        held.append(lone.held_chunks)
        assert len(lone.held_chunks) == 2 and lone.held_ids.tolist() == [
            v for v in range(8) if v // 2 in lone.held_chunks
        ]
        np.testing.assert_array_equal(lone.frames, frames[lone.held_ids])
    assert held[0] == held[1] == held[2] and held[3] == held[4] == held[5]  # new every 3 draws
    assert lone.draws == 7
    again, rng2 = VideoPool(videos, "train", memory_budget=1, **kw), np.random.default_rng(9)
    again.load_state_dict(state, rng2)
    assert again.draws == 4 and again.held_chunks == held[3]
    for draw in range(4, 7):
        again.refresh(rng2)
        assert again.held_chunks == held[draw]
    assert rng2.random() == rng.random()
