"""Damaged or missing chunk files are errors, never fill values: one line, exit 1, nothing trained
on them or marked complete; `inspect --verify` lists them and `encode` again repairs a store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import one_line_error as shared_one_line_error
from helpers import run

from vidlat.errors import StoreError
from vidlat.progress import set_quiet
from vidlat.stages.inference.encode import EncodeConfig, encode
from vidlat.store import chunks
from vidlat.store.reader import LatentStore
from vidlat.store.sampler import WindowSampler
from vidlat.store.videos import fingerprint, open_videos

CPU = EncodeConfig(device="cpu", batch_size=16)
PREDICT = ["--kind", "lstm", "--past", "3", "--future", "2", "--steps", "2", "--batch-size", "2",
           "--device", "cpu", "-q"]  # fmt: skip


@pytest.fixture(autouse=True)
def quiet():
    set_quiet(True)


@pytest.fixture(scope="module")
def clean_store(tiny_videos, tiny_ae, tmp_path_factory):
    return encode(tiny_videos, tiny_ae, tmp_path_factory.mktemp("s") / "lat.zarr", CPU)


@pytest.fixture
def store(clean_store, tmp_path) -> Path:
    copy = tmp_path / "lat.zarr"
    shutil.copytree(clean_store, copy)
    return copy


@pytest.fixture
def videos(tiny_videos, tmp_path) -> Path:
    copy = tmp_path / "videos.zarr"
    shutil.copytree(tiny_videos, copy)
    return copy


def one_line_error(result, *words: str) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return shared_one_line_error(result, *words)


def chunk_file(root: Path, array: str, i: int) -> Path:
    top = root / array / "c" / str(i)
    files = [top, *sorted(top.rglob("*"))] if top.is_dir() else [top]
    return next(f for f in files if f.is_file())


def damage(path: Path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:10])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(np.random.default_rng(0).bytes(200))


@pytest.mark.parametrize("how", ["deleted", "truncated", "empty", "garbage"])
def test_train_predictor_refuses_a_damaged_chunk(store, tmp_path, how):
    damage(chunk_file(store, "pose", 0), how)
    result = run("train-predictor", "--latents", store, "--out", tmp_path / "pred", *PREDICT)
    line = one_line_error(result, "chunk 0", "'pose'", "vidlat encode")
    assert str(store) in line
    assert not (tmp_path / "pred" / "checkpoints").exists()  # nothing trained on the damage


def test_a_missing_chunk_is_found_when_the_store_is_opened(store):
    chunk_file(store, "content", 2).unlink()
    with pytest.raises(StoreError, match="chunk 2 of 'content': chunk file is missing"):
        LatentStore.open(store)


def test_a_chunk_lost_after_opening_is_caught_at_read(store):
    opened = LatentStore.open(store)
    chunk_file(store, "pose", 1).unlink()  # reads as NaN fill values from now on
    with pytest.raises(StoreError, match="chunk 1 of 'pose'.*missing"):
        WindowSampler(opened, window=4, batch_size=2)
    damage(chunk_file(store, "content", 0), "truncated")
    with pytest.raises(StoreError, match="chunk 0 of 'content'.*cannot be decoded"):
        opened.read("content", [0, 5])


def test_verify_lists_every_damaged_chunk_and_encode_repairs_them(
    store, clean_store, tiny_videos, tiny_ae
):
    chunk_file(store, "pose", 0).unlink()
    damage(chunk_file(store, "content", 2), "garbage")
    result = run("inspect", store, "--verify")
    one_line_error(result, "2 damaged chunk(s)", "vidlat encode")
    assert "damaged  chunk 0 of 'pose': chunk file is missing" in result.output
    assert "damaged  chunk 2 of 'content': cannot be decoded" in result.output

    result = run("encode", "--data", tiny_videos, "--ae", tiny_ae, "--out", store, "--device",
                 "cpu", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    repaired, clean = LatentStore.open(store), LatentStore.open(clean_store)
    assert repaired.complete and not repaired.damaged_chunks()
    for name in clean.fields:
        np.testing.assert_array_equal(
            repaired.read(name, slice(None)), clean.read(name, slice(None))
        )
    assert run("inspect", store, "--verify").exit_code == 0


def test_an_unwritten_mark_in_a_complete_store_is_damage(store):
    chunk_file(store, "written", 1).unlink()  # reads False: the chunk looks never written
    with pytest.raises(StoreError, match="chunk 1 of 'written': marked unwritten"):
        LatentStore.open(store)


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_encode_refuses_a_damaged_dataset_and_marks_nothing_complete(
    videos, tiny_ae, tmp_path, how
):
    damage(chunk_file(videos, "videos", 1), how)
    out = tmp_path / "lat.zarr"
    result = run("encode", "--data", videos, "--ae", tiny_ae, "--out", out, "--device", "cpu", "-q")
    one_line_error(result, "chunk 1 of 'videos'", "re-create the dataset")
    assert not out.exists() or not LatentStore.open(out, require_complete=False).complete


def test_train_ae_refuses_a_damaged_dataset(videos, tmp_path):
    damage(chunk_file(videos, "videos", 0), "garbage")
    result = run("train-ae", "--data", videos, "--out", tmp_path / "ae", "--steps", 2,
                 "--batch-size", 2, "--device", "cpu", "-q")  # fmt: skip
    one_line_error(result, "chunk 0 of 'videos'", "cannot be decoded")
    assert not (tmp_path / "ae" / "checkpoints").exists()


def test_a_missing_factor_chunk_is_found_in_new_datasets(videos):
    factor = next(p for p in (videos / "factors").iterdir() if p.is_dir())
    chunk_file(videos / "factors", factor.name, 0).unlink()
    with pytest.raises(StoreError, match=f"chunk 0 of 'factors/{factor.name}'"):
        open_videos(videos)
    result = run("inspect", videos, "--verify")
    one_line_error(result, "1 damaged chunk(s)", "re-create the dataset")


def test_a_clean_dataset_verifies(videos):
    result = run("inspect", videos, "--verify")
    assert result.exit_code == 0 and "every chunk decodes" in result.output, result.output


# -- datasets written before every chunk got a file (no `every_chunk_stored` in their block)


def as_old_format(path: Path) -> None:
    """Rewrite `path`'s vidlat block as an older vidlat wrote it: without every_chunk_stored, and
    with the fingerprint of the videos as they are now."""
    group = zarr.open_group(path, mode="r+")
    block = dict(group.attrs["vidlat"])
    del block[chunks.EVERY_CHUNK_STORED]
    group.attrs["vidlat"] = block | {"fingerprint": fingerprint(group["videos"])}


def blacken(path: Path, i: int, stored: bool) -> None:
    """Make videos chunk `i` all black; with `stored` its file is kept, else zarr (by default)
    drops the file of a chunk equal to the fill value, as older vidlat let it."""
    array = zarr.open_array(path / "videos", mode="r+")
    array = chunks.writing(array) if stored else array
    per = array.chunks[0]
    array[i * per : (i + 1) * per] = 0


def has_file(path: Path, i: int) -> bool:
    return any(p.is_file() for p in (path / "videos" / "c" / str(i)).rglob("*"))


@pytest.mark.parametrize("stored", [True, False])
def test_an_all_black_chunk_of_an_old_dataset_is_accepted(videos, stored):
    blacken(videos, 1, stored)
    as_old_format(videos)
    assert has_file(videos, 1) == stored
    data = open_videos(videos)  # no "chunk file is missing"
    assert (data.read(slice(4, 8)) == 0).all() and data.read(slice(0, 4)).any()
    assert data.damaged_chunks(decode=True) == []
    result = run("inspect", videos, "--verify")
    assert result.exit_code == 0 and "every chunk decodes" in result.output, result.output


def test_a_lost_chunk_of_an_old_dataset_is_refused(videos, tmp_path):
    blacken(videos, 1, stored=False)  # absent and black: fine alone (see above)
    as_old_format(videos)
    chunk_file(videos, "videos", 2).unlink()  # absent and not black: lost
    with pytest.raises(StoreError, match="chunk 2 of 'videos': chunk file is missing, and"):
        open_videos(videos)
    result = run("train-ae", "--data", videos, "--out", tmp_path / "ae", "--steps", 2,
                 "--batch-size", 2, "--device", "cpu", "-q")  # fmt: skip
    one_line_error(result, "chunk 2 of 'videos'", "fingerprint", "re-create the dataset")
    assert not (tmp_path / "ae" / "checkpoints").exists()
    result = run("inspect", videos, "--verify")
    one_line_error(result, "damaged chunk(s)", "re-create the dataset")
