"""vidlat encode: latents equal the model's, resume equals one run, provenance is enforced."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import zarr

import vidlat.stages.inference.encode as enc
from vidlat.errors import StoreError
from vidlat.progress import set_quiet
from vidlat.stages.common.checkpoint import weights_hash
from vidlat.stages.inference.encode import EncodeConfig, encode, encode_frames, verify_store
from vidlat.stages.load import load_run
from vidlat.store.reader import LatentStore
from vidlat.store.videos import open_videos
from vidlat.store.writer import open_writer

CPU = EncodeConfig(device="cpu", batch_size=16)


@pytest.fixture(autouse=True)
def quiet():
    set_quiet(True)


@pytest.fixture(scope="module")
def store(tiny_videos, tiny_ae, tmp_path_factory):
    return encode(tiny_videos, tiny_ae, tmp_path_factory.mktemp("s") / "lat.zarr", CPU)


def test_store_holds_the_model_latents_with_roles_and_provenance(store, tiny_videos, tiny_ae):
    s = LatentStore.open(store)
    videos = open_videos(tiny_videos)
    model, _ = load_run(tiny_ae, "stage1")
    assert {n: f.role for n, f in s.fields.items() if f.role != "aux"} == {
        "content": "content",
        "pose": "pose",
    }
    expected = encode_frames(model, videos.read([7]), 5, torch.device("cpu"))
    np.testing.assert_allclose(s.read("content", [7]), expected["content"], atol=1e-6)
    np.testing.assert_allclose(s.read("pose", [7]), expected["pose"], atol=1e-6)
    assert s.read("pose", slice(None)).shape == (10, 12, 3)
    assert s.encoder_hash == weights_hash(tiny_ae)
    assert s.attrs["source"]["fingerprint"] == videos.fingerprint
    assert s.attrs["encode_config"]["batch_size"] == 16
    # ground-truth factors travel with the latents
    np.testing.assert_array_equal(
        s.read("factor_position", slice(None)), videos.read_factor("position", slice(None))
    )


def test_latents_do_not_depend_on_batch_composition(tiny_videos, tiny_ae):
    model, _ = load_run(tiny_ae, "stage1")
    frames = open_videos(tiny_videos).read(slice(0, 3))
    one = encode_frames(model, frames, 1, torch.device("cpu"))
    many = encode_frames(model, frames, 36, torch.device("cpu"))
    for name in one:
        np.testing.assert_allclose(one[name], many[name], atol=1e-6)


def test_interrupted_encode_finishes_only_what_is_missing(
    store, tiny_videos, tiny_ae, tmp_path, monkeypatch
):
    out = tmp_path / "part.zarr"
    videos = open_videos(tiny_videos)
    writer, digest = enc.prepare_store(videos, tiny_ae, out, CPU, overwrite=False)
    job = enc.EncodeJob(str(tiny_videos), str(tiny_ae), str(out), digest, "cpu", 16)
    enc.encode_chunk(job, 1)  # as if the run died after one task
    with pytest.raises(StoreError, match="interrupted"):
        LatentStore.open(out)
    done = []
    real = enc.encode_chunk
    monkeypatch.setattr(enc, "encode_chunk", lambda job, i: done.append(i) or real(job, i))
    encode(tiny_videos, tiny_ae, out, CPU)
    assert sorted(done) == [0, 2]
    a, b = LatentStore.open(store), LatentStore.open(out)
    for name in a.fields:
        np.testing.assert_array_equal(a.read(name, slice(None)), b.read(name, slice(None)))
    encode(tiny_videos, tiny_ae, out, CPU)  # complete: nothing left to do
    assert sorted(done) == [0, 2]


def test_a_worker_opens_a_runs_store_and_dataset_once(store, tiny_videos, tiny_ae, tmp_path):
    videos = open_videos(tiny_videos)
    out = tmp_path / "once.zarr"
    _, digest = enc.prepare_store(videos, tiny_ae, out, CPU, overwrite=False)
    job = enc.EncodeJob(str(tiny_videos), str(tiny_ae), str(out), digest, "cpu", 16, token="a")
    writer, data = enc.cached_io(job)
    assert enc.cached_io(job) == (writer, data)  # the second chunk reuses them
    again = enc.cached_io(enc.EncodeJob(*[getattr(job, f) for f in ("data", "ae_dir", "out")],
                                        digest, "cpu", 16, token="b"))  # fmt: skip
    assert again[0] is not writer and again[1] is not data  # another run opens its own
    enc.encode_chunk(job, 0)
    assert open_writer(out).missing_chunks() == [1, 2]


def test_another_encoder_is_refused_unless_overwrite(store, tiny_videos, other_ae, tmp_path):
    with pytest.raises(StoreError, match="--overwrite"):
        encode(tiny_videos, other_ae, store.parent / "lat.zarr", CPU)
    out = tmp_path / "o.zarr"
    encode(tiny_videos, other_ae, out, CPU)
    assert LatentStore.open(out).encoder_hash == weights_hash(other_ae)
    replaced = encode(tiny_videos, open_writer(store).attrs["encoder"]["path"], out, CPU, True)
    assert LatentStore.open(replaced).encoder_hash == LatentStore.open(store).encoder_hash


def test_process_scheduler_writes_the_same_store(store, tiny_videos, tiny_ae, tmp_path):
    out = encode(tiny_videos, tiny_ae, tmp_path / "p.zarr", CPU.model_copy(update={
        "scheduler": "processes", "workers": 2}))  # fmt: skip
    a, b = LatentStore.open(store), LatentStore.open(out)
    for name in a.fields:
        np.testing.assert_array_equal(a.read(name, slice(None)), b.read(name, slice(None)))


def test_verify_matches_and_catches_tampering(store, tmp_path):
    assert max(verify_store(store, videos=10).values()) < 1e-5
    copy = tmp_path / "t.zarr"
    shutil.copytree(store, copy)
    zarr.open_array(copy / "pose", mode="r+")[:] = 0.5  # no longer what the encoder gives
    assert verify_store(copy, videos=3)["pose"] > 0.1


def test_encode_into_an_fsspec_url(store, tiny_videos, tiny_ae, other_ae):
    url = "memory://test_encode/lat.zarr"
    assert encode(tiny_videos, tiny_ae, url, CPU) == url
    a, b = LatentStore.open(store), LatentStore.open(url)
    for name in a.fields:
        np.testing.assert_array_equal(a.read(name, slice(None)), b.read(name, slice(None)))
    with pytest.raises(StoreError, match="--overwrite"):
        encode(tiny_videos, other_ae, url, CPU)  # the URL store exists: refused as locally


def test_local_worker_processes_share_the_cores(monkeypatch):
    import vidlat.stages.inference.encode as enc

    monkeypatch.setattr(enc.os, "cpu_count", lambda: 8)
    assert enc.worker_threads(EncodeConfig(scheduler="processes", workers=2)) == 4
    assert enc.worker_threads(EncodeConfig(scheduler="processes")) == 1  # 8 workers
    assert enc.worker_threads(EncodeConfig(scheduler="processes", workers=16)) == 1
    assert enc.worker_threads(EncodeConfig(scheduler="processes", threads_per_worker=3)) == 3
    assert enc.worker_threads(EncodeConfig(scheduler="threads")) is None  # this process: as is
