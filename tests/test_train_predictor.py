"""Stage-2 training from the latent store alone: learning, scale, checkpoints, resume, imports."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import exact_rows, write_store
from safetensors.torch import load_file

from vidlat.errors import CheckpointError
from vidlat.stages.common.checkpoint import latest_dir, save_checkpoint
from vidlat.stages.load import load_run
from vidlat.stages.training.train_predictor import (
    KIND,
    TrainPredictorConfig,
    train_predictor,
)
from vidlat.store.format import FieldSpec

ENCODER = "ab" * 32
# stage-1 code (common.nets is shared by both stages: it holds the one MLP)
STAGE1_MODULES = ("vidlat.stages.stage1", "vidlat.stages.stage1.drnet", "vidlat.stages.stage1.base")
STAGE1_MODULES += ("vidlat.stages.training.train_ae",)


@pytest.fixture(autouse=True)
def one_thread():
    # tiny LSTMs on a 2-core machine run fastest, and timings steadiest, on one thread
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trajectories(n_videos: int, n_frames: int, slots: int | None, seed: int = 0) -> dict:
    """Smooth latents: per-video sinusoidal pose (random frequency, phase, amplitude, offset),
    content constant per video, masks constant per video, and a per-video aux factor."""
    rng = np.random.default_rng(seed)
    lead = (n_videos, 1) if slots is None else (n_videos, 1, slots)
    t = np.arange(n_frames, dtype=np.float64).reshape(1, n_frames, *([1] * (len(lead) - 2)), 1)
    freq, phase = rng.uniform(0.3, 0.6, (*lead, 3)), rng.uniform(0, 2 * np.pi, (*lead, 3))
    amp, offset = rng.uniform(0.5, 1.5, (*lead, 3)), rng.uniform(-1, 1, (*lead, 3))
    pose = offset + amp * np.sin(freq * t + phase)  # (V, T, [N,] 3)
    content = np.repeat(rng.normal(size=(*lead, 4)), n_frames, axis=1)
    data = {"pose": pose, "content": content, "factor_id": np.arange(n_videos)}
    if slots is not None:
        data["mask"] = np.repeat((rng.uniform(size=(n_videos, 1, slots)) > 0.3) * 1.0, n_frames, 1)
    return data


def make_store(path, *, slots=None, scale=1.0, shift=0.0, n_videos=24, n_frames=16):
    data = trajectories(n_videos, n_frames, slots)
    data["pose"] = data["pose"] * scale + shift
    shape = (3,) if slots is None else (slots, 3)
    fields = [
        FieldSpec("content", "content", shape[:-1] + (4,)),
        FieldSpec("pose", "pose", shape),
        FieldSpec("factor_id", "aux", (), dtype="int64", per_frame=False),
    ]
    if slots is not None:
        fields.append(FieldSpec("mask", "mask", (slots,)))
    split = {"train": list(range(n_videos - 4)), "val": list(range(n_videos - 4, n_videos))}
    return write_store(path, fields, data, split=split, encoder_hash=ENCODER)


def config(**kw) -> TrainPredictorConfig:
    base = {"past": 4, "future": 6, "steps": 20, "batch_size": 16, "hidden": 32, "layers": 1}
    base |= {"lr": 3e-3, "device": "cpu", "log_every": 5, "val_every": 10, "checkpoint_every": 10}
    return TrainPredictorConfig(**{**base, **kw})


def metrics(out) -> list[dict]:
    return exact_rows(out / "metrics.jsonl")  # timing keys differ run to run


def weights(out) -> dict[str, torch.Tensor]:
    return load_file(latest_dir(out) / "model.safetensors")


@pytest.mark.parametrize("kind", ["lstm", "lstm-delta"])
def test_overfits_a_tiny_store(tmp_path, kind):
    store = make_store(tmp_path / "latents.zarr", scale=20.0, shift=-7.0)
    out = train_predictor(
        store, config(kind=kind, steps=300, log_every=25, val_every=300), tmp_path
    )
    rows = [r for r in metrics(out) if "loss" in r]
    first, last = rows[0]["loss"], rows[-1]["loss"]
    assert last < first / 10, (first, last)
    val = [r for r in metrics(out) if "val_loss" in r]
    assert len(val) == 1 and val[0]["step"] == 300 and np.isfinite(val[0]["val_future_mse"])


def test_checkpoint_meta_and_load_predictor(tmp_path):
    store = make_store(tmp_path / "latents.zarr", slots=2, scale=5.0, shift=3.0)
    out = train_predictor(store, config(kind="lstm-delta", steps=4), tmp_path / "run")
    model, meta = load_run(out, "predictor", "cpu")
    assert meta["kind"] == KIND == "predictor" and meta["predictor"] == "lstm-delta"
    assert meta["encoder_hash"] == ENCODER == store.encoder_hash
    assert meta["config"]["past"] == 4 and meta["config"]["future"] == 6
    assert [f["name"] for f in meta["fields"]] == ["content", "pose", "factor_id", "mask"]
    assert not model.training and sorted(model.fields) == ["content", "mask", "pose"]
    # normalisation: measured on the train split, saved with the weights and in the meta
    pose = store.read("pose", store.split["train"])  # (V, T, 2, 3)
    assert np.allclose(model.mean_pose.numpy(), pose.mean((0, 1, 2)), atol=1e-4)
    assert np.allclose(model.std_pose.numpy(), pose.std((0, 1, 2)), rtol=1e-4)
    assert np.allclose(meta["normalisation"]["std"]["pose"], model.std_pose.numpy())
    assert np.all(model.dscale_pose.numpy() < 1)  # smooth motion: steps are small vs the spread
    # any future length, every latent field, store units
    past = {k: torch.from_numpy(store.read(k, [20, 21])[:, :4]) for k in model.fields}
    with torch.no_grad():
        pred = model.rollout(past, 40)
    assert {k: tuple(v.shape) for k, v in pred.items()} == {
        "content": (2, 40, 2, 4), "pose": (2, 40, 2, 3), "mask": (2, 40, 2)
    }  # fmt: skip
    assert torch.equal(pred["mask"][:, 5], past["mask"][:, -1])
    assert abs(float(pred["pose"].mean()) - 3.0) < 5.0  # in store units, not normalised ones


def test_any_latent_scale_trains_alike(tmp_path):
    small = make_store(tmp_path / "a.zarr")
    large = make_store(tmp_path / "b.zarr", scale=1000.0, shift=500.0)
    cfg = config(kind="lstm-delta", steps=10, log_every=10, val_every=0)
    a = metrics(train_predictor(small, cfg, tmp_path / "ra"))[-1]
    b = metrics(train_predictor(large, cfg, tmp_path / "rb"))[-1]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)
    assert a["future_mse"] == pytest.approx(b["future_mse"], rel=1e-3)


@pytest.mark.parametrize("budget", [2**30, 1], ids=["in-memory", "streaming"])
def test_resume_equals_an_uninterrupted_run(tmp_path, budget):
    store = make_store(tmp_path / "latents.zarr")
    cfg = config(kind="lstm", steps=6, log_every=1, val_every=3, checkpoint_every=3,
                 memory_budget=budget, buffer_chunks=2)  # fmt: skip
    whole = train_predictor(store, cfg, tmp_path / "whole")
    part = train_predictor(store, cfg.model_copy(update={"steps": 3}), tmp_path / "part")
    with pytest.raises(CheckpointError, match="--resume"):
        train_predictor(store, cfg, part)
    with pytest.raises(CheckpointError, match="hidden"):
        train_predictor(store, cfg.model_copy(update={"hidden": 8}), part, resume=True)
    train_predictor(store, cfg, part, resume=True)
    a, b = weights(whole), weights(part)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(whole) == metrics(part)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train_predictor(store, cfg, tmp_path / "empty", resume=True)


def test_load_predictor_refuses_other_checkpoints(tmp_path):
    save_checkpoint(tmp_path, 1, {"model": torch.nn.Linear(2, 2)}, {}, {"kind": "stage1"})
    with pytest.raises(CheckpointError, match="not a predictor"):
        load_run(tmp_path, "predictor")


def test_stage2_imports_no_stage1_module(tmp_path):
    store = make_store(tmp_path / "latents.zarr")
    script = f"""
import json, sys
from vidlat.progress import set_quiet
from vidlat.stages.load import load_run
from vidlat.stages.training.train_predictor import TrainPredictorConfig, train_predictor
from vidlat.store.reader import LatentStore
set_quiet(True)
cfg = TrainPredictorConfig(past=4, future=4, steps=2, batch_size=4, hidden=8, layers=1,
                           device="cpu", val_every=1)
out = train_predictor(LatentStore.open({str(store.path)!r}), cfg, {str(tmp_path / "run")!r})
load_run(out, "predictor")
print(json.dumps(sorted(m for m in sys.modules if m.startswith("vidlat"))))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert "vidlat.stages.training.train_predictor" in loaded and "vidlat.store.sampler" in loaded
    assert not [m for m in STAGE1_MODULES if m in loaded], loaded


def test_the_cpu_thread_default_is_one_and_is_restored(tmp_path, monkeypatch):
    seen = []
    real = torch.set_num_threads
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (seen.append(n), real(n)))
    before = torch.get_num_threads()
    train_predictor(make_store(tmp_path / "s.zarr"), config(steps=1), tmp_path / "a")
    assert seen == [1, before] and torch.get_num_threads() == before
    seen.clear()
    train_predictor(make_store(tmp_path / "t.zarr"), config(steps=1, threads=2), tmp_path / "b")
    assert seen == [2, before]  # an explicit setting wins


def test_the_best_validation_checkpoint_is_kept_and_selected(tmp_path):
    store = make_store(tmp_path / "latents.zarr")
    cfg = config(kind="lstm-delta", steps=40, val_every=5, checkpoint_every=40, keep=1)
    out = train_predictor(store, cfg, tmp_path / "run")
    val = [r for r in metrics(out) if "val_future_mse" in r]
    best = min(val, key=lambda r: r["val_future_mse"])
    root = out / "checkpoints"
    assert (root / "best").read_text().strip() == f"step_{best['step']:06d}"
    assert (root / "latest").read_text().strip() == "step_000040"
    _, meta = load_run(out, "predictor", select="best")
    state = json.loads((root / f"step_{best['step']:06d}" / "state.json").read_text())
    assert state["train_state"]["best"] == best["val_future_mse"]
    a, b = load_run(out, "predictor", select="best")[0], load_run(out, "predictor")[0]
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    differ = any(not torch.equal(x, y) for x, y in pairs)
    assert differ == (best["step"] != 40)
