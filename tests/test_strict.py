"""Strict configs, divergence and checkpoint metadata: each mistake is one line and exit 1, a
non-finite loss stops training at the last finite checkpoint, a damaged state.json is named."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from helpers import exact_rows, one_line_error, run
from torch import nn

from vidlat.config import resolve_config
from vidlat.errors import CheckpointError, ConfigError, TrainingError
from vidlat.pipeline.generate import GenerateConfig
from vidlat.pipeline.run import load_run_config
from vidlat.progress import set_quiet
from vidlat.stages.common.checkpoint import latest_dir, load_checkpoint
from vidlat.stages.common.runs import ResumeRule
from vidlat.stages.load import load_run
from vidlat.stages.training.loop import Job, TrainingConfig, train

AE = ["--model", "drnet", "--steps", 2, "--batch-size", 2, "--device", "cpu", "-q"]
TINY_AE = "train_ae:\n  model_params: {width: 4, content_dim: 8, pose_dim: 3, critic_hidden: 8}\n"


@pytest.fixture(autouse=True)
def quiet():
    set_quiet(True)


# -- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("train_aee:\n  steps: 3\nencode: {}\n", ["'train_aee'", "did you mean 'train_ae'"]),
        ("train_ae:\n  steps: 3\n  steps: 4\n", ["duplicate key 'steps'"]),
        ("train_ae:\n  stpes: 3\n", ["stpes", "did you mean 'steps'"]),
        ("train_ae:\n  log_every: true\n", ["log_every", "boolean"]),
        ("train_ae:\n  lr: .inf\n", ["lr", "finite"]),
        ("train_ae:\n  lr: .nan\n", ["lr", "finite"]),
        ("train_ae:\n  - steps\n", ["'train_ae'", "mapping", "list"]),
    ],
)
def test_config_mistakes_are_one_line(tmp_path, tiny_videos, text, words):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    out = tmp_path / "ae"
    result = run("train-ae", "--data", tiny_videos, "--out", out, "--config", config, *AE)
    one_line_error(result, *words)
    assert not out.exists()


def test_numbers_are_not_booleans_and_booleans_not_numbers():
    with pytest.raises(ConfigError, match="is a number; give true or false"):
        resolve_config(GenerateConfig, None, npy=1)
    with pytest.raises(ConfigError, match="boolean"):
        resolve_config(TrainingConfig, None, batch_size=False)
    assert resolve_config(TrainingConfig, None, steps=0).steps == 0


def test_a_misspelt_section_of_a_run_config_is_named(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("source: synth\ntrain_aee:\n  steps: 3\n")
    with pytest.raises(ConfigError, match="train_aee.*did you mean 'train_ae'"):
        load_run_config(config)


def test_resume_refuses_another_seed_or_batch_size(tmp_path, tiny_videos):
    config = tmp_path / "c.yaml"
    config.write_text(TINY_AE)
    out = tmp_path / "ae"
    base = ["train-ae", "--data", tiny_videos, "--out", out, "--config", config, "--model",
            "drnet", "--device", "cpu", "-q"]  # fmt: skip
    assert run(*base, "--steps", 2, "--batch-size", 2).exit_code == 0
    one_line_error(run(*base, "--steps", 4, "--batch-size", 2, "--seed", 5, "--resume"),
                   "seed: 0 -> 5")  # fmt: skip
    one_line_error(run(*base, "--steps", 4, "--batch-size", 3, "--resume"), "batch_size: 2 -> 3")
    result = run(*base, "--steps", 4, "--batch-size", 2, "--resume")
    assert result.exit_code == 0, result.output


# -- divergence ----------------------------------------------------------------------------------


class Counter:
    """A sampler of nothing: the step number, with the state a checkpoint keeps."""

    def __init__(self):
        self.rng = np.random.default_rng(0)
        self.n = 0

    def sample(self):
        self.n += 1
        return self.n

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, state):
        self.n = state["n"]


def toy_build(bad_step: int = 0, killed_at: int = 0):
    """A Job of a linear model whose loss is infinite at `bad_step`, and which is interrupted
    (as by a kill) at step `killed_at` (0: never)."""

    def build(ranks):
        model = nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)

        def step(n, ctx):
            if n == killed_at:
                raise KeyboardInterrupt
            opt.zero_grad()
            x = torch.full((1, 2), float(n % 3))
            loss = model(x).pow(2).sum() * (math.inf if n == bad_step else 1.0)
            loss.backward()
            opt.step()
            return {"loss": loss.detach()}

        return Job(model, {"opt": opt}, Counter(), {"kind": "toy"}, ResumeRule((), (), "x"), step)

    return build


def test_a_non_finite_loss_stops_training_and_keeps_the_last_finite_checkpoint(tmp_path):
    cfg = TrainingConfig(steps=10, batch_size=1, device="cpu", log_every=1, checkpoint_every=2)
    build = toy_build(bad_step=5)

    with pytest.raises(TrainingError, match="at step 5; checkpoint step 4 stays latest"):
        train("toy", cfg, tmp_path / "run", False, build)
    assert latest_dir(tmp_path / "run").name == "step_000004"
    ckpt = load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(t).all() for t in ckpt.model_state.values())
    lines = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3, 4]  # no NaN line logged


# -- checkpoint metadata -------------------------------------------------------------------------


@pytest.fixture
def ae_copy(tiny_ae, tmp_path):
    copy = tmp_path / "ae"
    shutil.copytree(tiny_ae, copy)
    return copy


def edit_state(run_dir, change):
    path = latest_dir(run_dir) / "state.json"
    state = json.loads(path.read_text())
    change(state)
    path.write_text(json.dumps(state))
    return path


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda s: s.pop("step"), "field step"),
        (lambda s: s.update(step="ten"), "field step"),
        (lambda s: s["meta"].pop("image_size"), "meta field image_size"),
        (lambda s: s["meta"].update(config=[1]), "meta field config"),
    ],
)
def test_a_damaged_state_json_is_one_checkpoint_error(ae_copy, change, field):
    path = edit_state(ae_copy, change)
    with pytest.raises(CheckpointError, match=f"{path}.*{field}"):
        load_run(ae_copy, "stage1")


def test_a_truncated_state_json_is_named(ae_copy, tmp_path, tiny_videos):
    path = latest_dir(ae_copy) / "state.json"
    path.write_text(path.read_text()[:40])
    result = run("generate", "--ae", ae_copy, "--data", tiny_videos, "--interpolate", "all",
                 "--out", tmp_path / "interp", "--device", "cpu")  # fmt: skip
    one_line_error(result, "state.json", "not JSON")


def test_weights_that_do_not_fit_name_their_first_tensors(ae_copy):
    edit_state(ae_copy, lambda s: s["meta"]["config"].update(content_dim=9))
    with pytest.raises(CheckpointError, match=r"do not fit their model: shaped \S+ \(\d+"):
        load_run(ae_copy, "stage1")


def test_metrics_after_a_resume_equal_an_uninterrupted_run(tmp_path):
    cfg = TrainingConfig(steps=10, batch_size=1, device="cpu", log_every=3, checkpoint_every=4)
    train("toy", cfg, tmp_path / "one", False, toy_build())
    with pytest.raises(KeyboardInterrupt):
        train("toy", cfg, tmp_path / "two", False, toy_build(killed_at=6))
    train("toy", cfg, tmp_path / "two", True, toy_build())  # from step 4, not a multiple of 3
    one, two = (exact_rows(tmp_path / d / "metrics.jsonl") for d in ("one", "two"))
    assert one == two and len(one) == 4  # every value but the timing keys


def test_inspect_names_a_damaged_state_json(ae_copy):
    edit_state(ae_copy, lambda s: s.pop("step"))
    one_line_error(run("inspect", ae_copy), "state.json", "field step")
