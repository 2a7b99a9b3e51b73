"""Inputs are never destroyed: outputs that overlap an input are refused, --overwrite replaces
only what the same command made and only once the new result is complete, store creation is
atomic, and `vidlat run` never deletes a stage folder it did not record."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr
from helpers import one_line_error, run

import vidlat.stages.inference.encode as enc
from vidlat.errors import StoreError
from vidlat.progress import set_quiet
from vidlat.stages.common.checkpoint import weights_hash
from vidlat.stages.common.runs import run_lock
from vidlat.stages.inference.encode import EncodeConfig, encode
from vidlat.store import places
from vidlat.store.reader import LatentStore
from vidlat.store.videos import open_videos

CPU = EncodeConfig(device="cpu", batch_size=16)


@pytest.fixture(autouse=True)
def quiet():
    set_quiet(True)


@pytest.fixture
def videos(tiny_videos, tmp_path) -> Path:
    copy = tmp_path / "videos.zarr"
    shutil.copytree(tiny_videos, copy)
    return copy


def fingerprint(path: Path) -> str:
    return open_videos(path).fingerprint


def test_import_onto_itself_is_refused_and_keeps_the_dataset(videos):
    before = fingerprint(videos)
    result = run("data", "import", videos, "--out", videos, "--overwrite", "-q")
    one_line_error(result, "is the input source", "destroy")
    result = run("data", "import", videos, "--out", videos / "inner.zarr", "-q")
    one_line_error(result, "is inside the input source")
    assert fingerprint(videos) == before


def test_a_failed_import_overwrite_keeps_the_old_dataset(videos, tmp_path):
    frames = np.random.default_rng(0).random((10, 4, 8, 8, 1), dtype=np.float32)
    frames[9, 3, 0, 0, 0] = np.nan  # found only when the second chunk of 8 videos is read
    np.save(tmp_path / "bad.npy", frames)
    before = fingerprint(videos)
    result = run("data", "import", tmp_path / "bad.npy", "--out", videos, "--overwrite", "-q")
    one_line_error(result, "NaN")
    assert fingerprint(videos) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.npy", "videos.zarr"]


def test_encode_never_writes_over_its_inputs_or_other_outputs(videos, tiny_ae, tmp_path):
    before = fingerprint(videos)
    result = run("encode", "--data", videos, "--ae", tiny_ae, "--out", videos, "--overwrite",
                 "--device", "cpu", "-q")  # fmt: skip
    one_line_error(result, "is the input --data")
    result = run("encode", "--data", videos, "--ae", tiny_ae, "--out", tiny_ae / "lat.zarr",
                 "--device", "cpu", "-q")  # fmt: skip
    one_line_error(result, "is inside the input --ae")
    other = tmp_path / "other.zarr"
    shutil.copytree(videos, other)
    result = run("encode", "--data", videos, "--ae", tiny_ae, "--out", other, "--overwrite",
                 "--device", "cpu", "-q")  # fmt: skip
    one_line_error(result, "is a video dataset", "not a latent store")
    assert fingerprint(videos) == before and fingerprint(other) == before
    (tmp_path / "file").write_text("x")
    result = run("encode", "--data", videos, "--ae", tiny_ae, "--out", tmp_path / "file",
                 "--device", "cpu", "-q")  # fmt: skip
    one_line_error(result, "is a file")


def test_a_failed_encode_overwrite_keeps_the_old_store(videos, tiny_ae, other_ae, tmp_path,
                                                      monkeypatch):  # fmt: skip
    out = encode(videos, tiny_ae, tmp_path / "lat.zarr", CPU)
    old = LatentStore.open(out).read("pose", slice(None))

    def fail(job, index):
        raise StoreError("encoder died")

    monkeypatch.setattr(enc, "encode_chunk", fail)
    with pytest.raises(StoreError, match="encoder died"):
        encode(videos, other_ae, out, CPU, overwrite=True)
    np.testing.assert_array_equal(LatentStore.open(out).read("pose", slice(None)), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.zarr", "videos.zarr"]
    monkeypatch.undo()
    encode(videos, other_ae, out, CPU, overwrite=True)  # and a successful one replaces it
    assert LatentStore.open(out).encoder_hash == weights_hash(other_ae)


def test_a_kill_during_store_creation_leaves_nothing_the_rerun_refuses(
    videos, tiny_ae, tmp_path, monkeypatch
):
    real = enc.create_store

    def killed(path, *args, **kwargs):
        real(path, *args, **kwargs)
        group = zarr.open_group(str(path), mode="r+")
        del group.attrs["vidlat"]  # as if killed after the arrays, before the vidlat block
        # what a kill -9 here leaves: the half-made group under a dead process's name
        shutil.copytree(path, tmp_path / ".lat.zarr.new-999999999")
        raise KeyboardInterrupt

    monkeypatch.setattr(enc, "create_store", killed)
    with pytest.raises(KeyboardInterrupt):
        encode(videos, tiny_ae, tmp_path / "lat.zarr", CPU)
    monkeypatch.undo()
    assert not (tmp_path / "lat.zarr").exists()
    # an interrupt removes its own half-made group; a dead process's is cleared by the rerun,
    # which needs no --overwrite
    assert [p.name for p in tmp_path.glob(".lat.zarr.*")] == [".lat.zarr.new-999999999"]
    result = run("encode", "--data", videos, "--ae", tiny_ae, "--out", tmp_path / "lat.zarr",
                 "--device", "cpu", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert LatentStore.open(tmp_path / "lat.zarr").complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.zarr", "videos.zarr"]


def test_swap_is_undone_when_killed_between_its_renames(tmp_path):
    out = tmp_path / "gen"
    (tmp_path / ".gen.old-999999999").mkdir()  # the old result, moved aside by a dead process
    (tmp_path / ".gen.old-999999999" / "metrics.json").write_text("{}")
    (tmp_path / ".gen.new-999999998").mkdir()
    places.clear_stale(out)
    assert (out / "metrics.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]


def test_an_invalid_scheduler_leaves_no_store(videos, tiny_ae, tmp_path):
    result = run("encode", "--data", videos, "--ae", tiny_ae, "--out", tmp_path / "lat.zarr",
                 "--scheduler", "bogus", "--device", "cpu", "-q")  # fmt: skip
    one_line_error(result, "scheduler 'bogus'")
    assert not (tmp_path / "lat.zarr").exists()


PRED = ["--kind", "lstm", "--past", 4, "--future", 2, "--steps", 2, "--batch-size", 2,
        "--device", "cpu", "-q"]  # fmt: skip


def test_generate_refuses_what_it_did_not_make_and_overwrites_only_its_own(
    videos, tiny_ae, tmp_path
):
    store = encode(videos, tiny_ae, tmp_path / "lat.zarr", CPU)
    pred = tmp_path / "pred"
    assert run("train-predictor", "--latents", store, "--out", pred, *PRED).exit_code == 0
    config = (pred / "config.yaml").read_text()
    gen = ["generate", "--ae", tiny_ae, "--predictor", pred, "--data", videos, "--videos", "0:2",
           "--device", "cpu"]  # fmt: skip
    one_line_error(run(*gen, "--out", pred, "--overwrite"), "is the input --predictor")
    one_line_error(run(*gen, "--out", videos / "g"), "is inside the input --data")
    one_line_error(run(*gen, "--out", store, "--overwrite"), "is a latent store", "not a vidlat")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    one_line_error(run(*gen, "--out", mine), "already exists", "--overwrite")
    one_line_error(run(*gen, "--out", mine, "--overwrite"), "will not replace")
    assert (mine / "notes.txt").read_text() == "keep me"
    assert (pred / "config.yaml").read_text() == config
    out = tmp_path / "gen"
    assert run(*gen, "--out", out).exit_code == 0
    one_line_error(run(*gen, "--out", out), "already exists", "--overwrite")
    result = run(*gen, "--out", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / "metrics.json").is_file() and (out / places.GENERATED).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gen", "lat.zarr", "mine", "pred", "videos.zarr"
    ]  # fmt: skip


def test_run_never_deletes_a_stage_folder_it_did_not_record(tmp_path):
    from tests.test_run import write_config  # the tiny whole-pipeline config

    (tmp_path / "run" / "ae").mkdir(parents=True)
    (tmp_path / "run" / "ae" / "notes.txt").write_text("keep me")
    result = run("run", "--config", write_config(tmp_path / "c.yaml"), "--out", tmp_path / "run")
    one_line_error(result, "does not record it", "will not replace it")
    assert (tmp_path / "run" / "ae" / "notes.txt").read_text() == "keep me"


def test_a_killed_encode_leaves_no_worker_processes(videos, tiny_ae, tmp_path):
    psutil = pytest.importorskip("psutil")
    config = tmp_path / "c.yaml"
    config.write_text("encode: {scheduler: processes, workers: 2, batch_size: 1}\n")
    command = [sys.executable, "-m", "vidlat", "encode", "--data", videos, "--ae", tiny_ae,
               "--out", tmp_path / "lat.zarr", "--config", config, "-q"]  # fmt: skip
    proc = subprocess.Popen([str(c) for c in command])
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(parent.children(True)) < 2:
        time.sleep(0.1)
    children = parent.children(recursive=True)  # the workers and multiprocessing's tracker
    proc.kill()  # kill -9: no handler of the parent runs
    proc.wait()
    assert len(children) >= 2
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, alive
    store = tmp_path / "lat.zarr"
    assert not store.exists() or not LatentStore.open(store, require_complete=False).complete


AE = ["--model", "drnet", "--steps", 2, "--batch-size", 2, "--device", "cpu", "-q"]


def test_training_outputs_are_checked_before_work_starts(videos, tmp_path):
    before = fingerprint(videos)
    one_line_error(run("train-ae", "--data", videos, "--out", videos, *AE), "is the input --data")
    (tmp_path / "file").write_text("x")
    one_line_error(run("train-ae", "--data", videos, "--out", tmp_path / "file", *AE), "is a file")
    assert fingerprint(videos) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_out_is_one_line(videos, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run("train-ae", "--data", videos, "--out", locked / "ae", *AE)
        one_line_error(result, "is not writable")
    finally:
        locked.chmod(0o700)


def test_one_writer_per_run_folder(videos, tmp_path):
    out = tmp_path / "ae"
    with run_lock(out):  # as another train-ae into the same --out would hold it
        result = run("train-ae", "--data", videos, "--out", out, *AE)
        one_line_error(result, f"PID {os.getpid()}", "another vidlat process")
    assert not (out / "checkpoints").exists()
    assert run("train-ae", "--data", videos, "--out", out, *AE).exit_code == 0  # released


# -- the same write-beside-then-swap at an fsspec URL (memory://: no rename; file://: a folder)


def memory_url(name: str = "lat.zarr") -> str:
    return f"memory://vidlat-{uuid.uuid4().hex}/{name}"


def url_files(url: str) -> dict[str, bytes]:
    """Every file under `url`, relative path -> bytes."""
    fs, root = fsspec.core.url_to_fs(url)
    return {p[len(root) :]: fs.cat_file(p) for p in fs.find(root)}


def listing(url: str) -> list[str]:
    """Names in the folder holding `url` (where a temporary sibling would lie)."""
    fs, root = fsspec.core.url_to_fs(url)
    parent = root.rpartition("/")[0]
    return (
        sorted(p.rpartition("/")[2] for p in fs.ls(parent, detail=False))
        if fs.exists(parent)
        else []
    )


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_encode_overwrite_at_a_url_keeps_the_old_store_until_the_new_one_is_complete(
    videos, tiny_ae, other_ae, tmp_path, monkeypatch, scheme
):
    url = memory_url() if scheme == "memory" else f"file://{tmp_path}/lat.zarr"
    first = encode(videos, tiny_ae, url, CPU)
    before = url_files(url)
    assert LatentStore.open(url).complete and before["/zarr.json"]

    def fail(job, index):
        raise StoreError("encoder died")

    monkeypatch.setattr(enc, "encode_chunk", fail)
    with pytest.raises(StoreError, match="encoder died"):
        encode(videos, other_ae, url, CPU, overwrite=True)
    assert url_files(url) == before  # every file as it was: nothing deleted first
    assert LatentStore.open(url).encoder_hash == weights_hash(tiny_ae)
    assert listing(url) == (["lat.zarr"] if scheme == "memory" else ["lat.zarr", "videos.zarr"])
    monkeypatch.undo()
    assert encode(videos, other_ae, url, CPU, overwrite=True) == first
    replaced = LatentStore.open(url)
    assert replaced.complete and replaced.encoder_hash == weights_hash(other_ae)
    assert url_files(url) != before
    assert listing(url) == (["lat.zarr"] if scheme == "memory" else ["lat.zarr", "videos.zarr"])


def test_a_new_store_at_a_url_is_created_beside_and_moved_in_whole(videos, tiny_ae, monkeypatch):
    url = memory_url()
    seen = []
    real = enc.create_store

    def watched(path, *args, **kwargs):
        seen.append((path, places.exists(url)))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(enc, "create_store", watched)
    encode(videos, tiny_ae, url, CPU)
    [(path, there)] = seen
    assert path != url and "/.lat.zarr.new-" in path and not there
    assert LatentStore.open(url).complete and listing(url) == ["lat.zarr"]


def make_group(url: str, value: float, whole: bool = True) -> None:
    """A small latent-kind group at `url`; without `whole`, its root zarr.json is gone, as in a
    copy that a kill cut short."""
    group = zarr.create_group(url, zarr_format=3)
    group.attrs["vidlat"] = {"kind": "latents", "format_version": 1, "complete": True}
    group.create_array("pose", shape=(4,), chunks=(2,), dtype="float32")[:] = value
    if not whole:
        fs, root = fsspec.core.url_to_fs(url)
        fs.rm_file(f"{root}/zarr.json")


def pose(url: str) -> list[float]:
    return zarr.open_group(url, mode="r")["pose"][:].tolist()


def test_a_swap_at_a_url_replaces_the_store_and_leaves_no_sibling():
    out = memory_url()
    make_group(out, 1.0)
    new = places.beside(out)
    assert new.startswith(out.rpartition("/")[0] + "/.lat.zarr.new-")
    make_group(new, 2.0)
    assert places.swap_in(new, out) == out
    assert pose(out) == [2.0] * 4 and listing(out) == ["lat.zarr"]


def test_a_move_cut_short_at_a_url_is_never_a_group(monkeypatch):
    out = memory_url()
    new = places.beside(out)
    make_group(new, 2.0)
    fs, root = fsspec.core.url_to_fs(new)
    real = type(fs).cp_file

    def killed(self, source, target, **kwargs):
        if source == f"{root}/zarr.json":  # a kill once every other file is copied
            raise KeyboardInterrupt
        return real(self, source, target, **kwargs)

    monkeypatch.setattr(type(fs), "cp_file", killed)
    with pytest.raises(KeyboardInterrupt):
        places.publish(new, out)
    monkeypatch.undo()
    assert places.exists(out) and not places.exists(f"{out}/zarr.json")  # files, but no group
    assert pose(new) == [2.0] * 4  # the source is untouched until the copy is whole


def dead(url: str, kind: str) -> str:
    """The name a dead process of this machine gave a sibling of `url`."""
    return f"{url.rpartition('/')[0]}/.lat.zarr.{kind}-999999999.{places._host()}"


def test_a_swap_killed_at_a_url_is_undone_or_finished_by_the_next_writer():
    # killed while the new store was being copied in: the old one is put back
    out = memory_url()
    make_group(dead(out, "old"), 1.0)
    make_group(out, 2.0, whole=False)
    make_group(dead(out, "new"), 2.0)
    places.clear_stale(out)
    assert pose(out) == [1.0] * 4 and listing(out) == ["lat.zarr"]
    # killed after the new store was whole at `out`: it stays, the old one goes
    out = memory_url()
    make_group(dead(out, "old"), 1.0)
    make_group(out, 2.0)
    places.clear_stale(out)
    assert pose(out) == [2.0] * 4 and listing(out) == ["lat.zarr"]
    # killed while publishing a new store: the half copy and the original both go
    out = memory_url()
    make_group(dead(out, "new"), 2.0)
    make_group(out, 2.0, whole=False)
    places.clear_stale(out)
    assert not places.exists(out) and listing(out) == []
    # a sibling of another machine's process is never taken for dead
    out = memory_url()
    other = f"{out.rpartition('/')[0]}/.lat.zarr.new-1.another-host"
    make_group(other, 3.0)
    places.clear_stale(out)
    assert pose(other) == [3.0] * 4


def test_a_dataset_at_a_url_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("data", "synth", "--out", memory_url("v.zarr"), "--videos", 2, "-q")
    one_line_error(result, "a video dataset is written to a local folder", "fsspec URL")
    assert list(tmp_path.iterdir()) == []  # no local folder named memory:
