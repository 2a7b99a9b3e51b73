"""kill -9 of a training command mid-run, then --resume: the same weights, optimiser state and
metrics as a run that was never interrupted (issue 13), for train-predictor and train-ae."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from helpers import exact_rows, write_store

from vidlat.stages.common.checkpoint import load_checkpoint
from vidlat.store.format import FieldSpec

PREDICTOR = {"kind": "lstm", "hidden": 8, "layers": 1, "past": 3, "future": 3, "steps": 2400,
             "batch_size": 4, "lr": 0.01, "device": "cpu", "log_every": 100, "val_every": 0,
             "checkpoint_every": 200, "keep": 20}  # fmt: skip
TINY_DRNET = {"width": 4, "content_dim": 8, "pose_dim": 3, "critic_hidden": 8}
AE = {"model": "drnet", "model_params": TINY_DRNET, "steps": 240, "batch_size": 4, "max_k": 3,
      "device": "cpu", "log_every": 20, "sample_every": 0, "val_every": 0,
      "checkpoint_every": 20, "keep": 20}  # fmt: skip


def command(kind: str, config, tmp_path, inputs: list[str], out, *extra: str) -> list[str]:
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "vidlat", kind, "--config", str(path), *inputs, "--out",
            str(out), "--quiet", *extra]  # fmt: skip


def kill_after_a_checkpoint(cmd: list[str], out, at_least: int) -> int:
    """Start `cmd`, SIGKILL it once it has checkpointed step >= `at_least`; the step seen."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = out / "checkpoints" / "latest"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if latest.is_file() and int(latest.read_text().split("_")[1]) >= at_least:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return load_checkpoint(out).step


def finish(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


def assert_same_run(a, b) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca.step == cb.step
    for name, value in ca.model_state.items():
        assert torch.equal(value, cb.model_state[name]), name
    for opt, state in ca.optim_state.items():
        for i, moments in state["state"].items():
            for key, value in moments.items():
                if torch.is_tensor(value):
                    assert torch.equal(value, cb.optim_state[opt]["state"][i][key]), (opt, key)
    assert exact_rows(a / "metrics.jsonl") == exact_rows(b / "metrics.jsonl")


@pytest.fixture
def latents(tmp_path):
    rng = np.random.default_rng(0)
    data = {
        "pose": np.cumsum(rng.normal(0, 0.3, (12, 8, 3)), axis=1),
        "content": np.repeat(rng.normal(size=(12, 1, 4)), 8, axis=1),
    }
    fields = [FieldSpec("content", "content", (4,)), FieldSpec("pose", "pose", (3,))]
    write_store(tmp_path / "lat.zarr", fields, data, split={"train": list(range(12))})
    return tmp_path / "lat.zarr"


def test_kill_9_of_train_predictor_then_resume_equals_an_uninterrupted_run(latents, tmp_path):
    inputs = ["--latents", str(latents)]
    finish(command("train-predictor", PREDICTOR, tmp_path, inputs, tmp_path / "ref"))
    out = tmp_path / "run"
    cmd = command("train-predictor", PREDICTOR, tmp_path, inputs, out)
    step = kill_after_a_checkpoint(cmd, out, at_least=400)
    assert 400 <= step < PREDICTOR["steps"]
    finish([*cmd, "--resume"])
    assert_same_run(tmp_path / "ref", out)


def test_kill_9_of_train_ae_then_resume_equals_an_uninterrupted_run(tiny_videos, tmp_path):
    inputs = ["--data", str(tiny_videos)]
    finish(command("train-ae", AE, tmp_path, inputs, tmp_path / "ref"))
    out = tmp_path / "run"
    cmd = command("train-ae", AE, tmp_path, inputs, out)
    step = kill_after_a_checkpoint(cmd, out, at_least=40)
    assert 40 <= step < AE["steps"]
    finish([*cmd, "--resume"])
    assert_same_run(tmp_path / "ref", out)
