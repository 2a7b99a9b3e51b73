"""The `vidlat` app end to end on a tiny config: every command, its help, and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from vidlat.cli.app import app
from vidlat.store.reader import LatentStore
from vidlat.store.videos import open_videos

COMMANDS = [[], ["data"], ["data", "synth"], ["data", "moving-mnist"], ["data", "import"],
            ["inspect"], ["train-ae"], ["encode"], ["train-predictor"], ["generate"],
            ["train-generator"], ["evaluate"], ["run"], ["report"]]  # fmt: skip
TINY = {
    "train_ae": {"model_params": {"width": 4, "content_dim": 8, "pose_dim": 3, "critic_hidden": 8},
                 "batch_size": 4, "max_k": 3, "log_every": 1, "sample_every": 2,
                 "checkpoint_every": 2},
    "train_predictor": {"hidden": 8, "layers": 1, "batch_size": 4, "val_every": 2,
                        "log_every": 1, "checkpoint_every": 4},
}  # fmt: skip


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "vidlat")
def test_help_of_every_command(command):
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_four_commands_end_to_end(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    data, ae, store = tmp_path / "v.zarr", tmp_path / "ae", tmp_path / "lat.zarr"
    pred, gen = tmp_path / "pred", tmp_path / "gen"
    steps = [
        ("data", "synth", "--out", data, "--videos", 8, "--frames", 10, "--size", 32, "-q"),
        ("train-ae", "--data", data, "--model", "drnet", "--out", ae, "--steps", 4,
         "--device", "cpu", "--config", config, "-q"),
        ("encode", "--data", data, "--ae", ae, "--out", store, "--device", "cpu", "-q"),
        ("train-predictor", "--latents", store, "--kind", "lstm-delta", "--out", pred,
         "--past", 4, "--future", 3, "--steps", 4, "--device", "cpu", "--config", config, "-q"),
        ("generate", "--ae", ae, "--predictor", pred, "--data", data, "--videos", "0:2",
         "--out", gen, "--device", "cpu"),
    ]  # fmt: skip
    for args in steps:
        result = run(*args)
        assert result.exit_code == 0, (args[0], result.output)
    assert open_videos(data).shape == (8, 10, 32, 32, 3)
    assert (ae / "config.yaml").is_file() and (ae / "metrics.jsonl").is_file()
    assert list((ae / "samples").glob("*.png"))
    assert LatentStore.open(store).read("pose", slice(None)).shape == (8, 10, 3)
    written = yaml.safe_load((pred / "config.yaml").read_text())
    assert written["past"] == 4 and written["lr"] == 1e-3  # lr: the predictors' default, as used
    assert yaml.safe_load((ae / "config.yaml").read_text())["model_params"]["lr"] == 0.002
    written = yaml.safe_load((gen / "config.yaml").read_text())
    assert (written["past"], written["future"]) == (4, 3)  # no --past: the predictor's
    metrics = json.loads((gen / "metrics.json").read_text())
    assert len(metrics["psnr"]) == 3 and np.isfinite(metrics["psnr"]).all()
    assert "PSNR" in result.output and "grid.png" in result.output
    assert open_videos(gen / "predicted.zarr").shape == (2, 3, 32, 32, 3)
    inspected = run("inspect", store, "--verify")
    assert inspected.exit_code == 0, inspected.output
    assert "field pose" in inspected.output and "the store matches" in inspected.output
    inspected = run("inspect", ae)
    assert "latest checkpoint" in inspected.output and "drnet" in inspected.output


def test_flags_beat_the_config_file_even_at_zero(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train_ae:\n  steps: 50\n  checkpoint_every: 1\n")
    data = tmp_path / "v.zarr"
    run("data", "synth", "--out", data, "--videos", 4, "--frames", 4, "--size", 32, "-q")
    result = run("train-ae", "--data", data, "--out", tmp_path / "ae", "--steps", 0,
                 "--device", "cpu", "--config", config, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "ae" / "config.yaml").read_text())["steps"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("inspect", "nowhere.zarr"), "does not exist"),
        (("train-ae", "--data", "nowhere.zarr", "--out", "x"), "nowhere.zarr"),
        (("data", "synth", "--out", "{tmp}/v.zarr", "--config", "{tmp}/bad.yaml"),
         "stepz: unknown key"),
        (("data", "import", "{tmp}/bad.npy", "--out", "{tmp}/i.zarr"), "bad.npy"),
    ],
)  # fmt: skip
def test_user_mistakes_are_one_line_errors(tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("stepz: 3\n")
    np.save(tmp_path / "bad.npy", np.full((2, 3), np.nan))
    result = run(*(a.format(tmp=tmp_path) for a in args))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert "Traceback" not in result.output


def test_stochastic_and_unconditional_generation(tmp_path):
    """svg predictor with --samples K, and AVLAE with --unconditional N --fix appearance."""
    config = tmp_path / "tiny.yaml"
    # AVLAE's sequences have no observed frame to take U-Net skips from: a stage 1 without them
    params = {**TINY["train_ae"]["model_params"], "skips": False}
    plain = {**TINY["train_ae"], "model_params": params}
    config.write_text(yaml.safe_dump({
        **TINY, "train_ae": plain,
        "train_generator": {"batch_size": 4, "log_every": 1, "checkpoint_every": 2},
    }))  # fmt: skip
    data, ae, store = tmp_path / "v.zarr", tmp_path / "ae", tmp_path / "lat.zarr"
    steps = [
        ("data", "synth", "--out", data, "--videos", 6, "--frames", 8, "--size", 32, "-q"),
        ("train-ae", "--data", data, "--out", ae, "--steps", 2, "--device", "cpu",
         "--config", config, "-q"),
        ("encode", "--data", data, "--ae", ae, "--out", store, "--device", "cpu", "-q"),
        ("train-predictor", "--latents", store, "--kind", "svg", "--out", tmp_path / "svg",
         "--past", 3, "--future", 3, "--steps", 2, "--device", "cpu", "--config", config, "-q"),
        ("generate", "--ae", ae, "--predictor", tmp_path / "svg", "--data", data, "--videos",
         "0:2", "--samples", 3, "--seed", 1, "--out", tmp_path / "k", "--device", "cpu"),
        ("train-generator", "--latents", store, "--out", tmp_path / "avlae", "--frames", 6,
         "--steps", 2, "--device", "cpu", "--config", config, "-q"),
        ("generate", "--ae", ae, "--generator", tmp_path / "avlae", "--unconditional", 3,
         "--fix", "appearance", "--out", tmp_path / "u", "--device", "cpu"),
    ]  # fmt: skip
    for args in steps:
        result = run(*args)
        assert result.exit_code == 0, (args[0], result.output)
    metrics = json.loads((tmp_path / "k" / "metrics.json").read_text())
    assert metrics["samples"] == 3 and len(metrics["best_of_k"]["mse"]) == 3
    best, mean = metrics["best_of_k"]["mean"]["mse"], metrics["mean_over_k"]["mean"]["mse"]
    assert best <= mean + 1e-12
    assert open_videos(tmp_path / "k" / "predicted.zarr").shape == (6, 3, 32, 32, 3)
    assert len(list((tmp_path / "u" / "gifs").glob("*.gif"))) == 3
    wrong = run("generate", "--ae", ae, "--fix", "motion", "--out", tmp_path / "x")
    assert wrong.exit_code == 1 and "--generator" in wrong.output
