"""`vidlat run`: all stages on a tiny config; reruns skip, resume, or redo only what changed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from vidlat.cli import evaluate_cmd
from vidlat.cli.app import VidlatGroup
from vidlat.errors import ConfigError
from vidlat.pipeline.run import LAYOUT, load_run_config, run_all
from vidlat.progress import set_quiet
from vidlat.stages.stage1 import STAGE1_MODELS

STAGES = ["data", "train_ae", "encode", "train_predictor", "generate", "evaluate"]
CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
TINY = {
    "source": "synth",
    "data": {"videos": 12, "frames": 10, "size": 32, "objects": 1, "videos_per_chunk": 4},
    "train_ae": {"model_params": {"width": 4, "content_dim": 8, "pose_dim": 3, "critic_hidden": 8},
                 "steps": 2, "batch_size": 4, "max_k": 3, "device": "cpu", "log_every": 1,
                 "sample_every": 0, "val_every": 2, "checkpoint_every": 2},
    "encode": {"device": "cpu"},
    "train_predictor": {"hidden": 8, "layers": 1, "batch_size": 4, "past": 4, "future": 3,
                        "steps": 4, "device": "cpu", "val_every": 2, "log_every": 1,
                        "checkpoint_every": 2},
    "generate": {"videos": "0:2", "device": "cpu"},
    "evaluate": {"device": "cpu", "probes": {"steps": 10, "hidden": 8}, "mig": {"samples": 12}},
}  # fmt: skip


def write_config(path: Path, **changes) -> Path:
    """TINY with `section={field: value}` changes, as a YAML file."""
    cfg = copy.deepcopy(TINY)
    for section, fields in changes.items():
        cfg[section].update(fields)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A run folder after one complete run_all, and the actions of that run."""
    set_quiet(True)
    root = tmp_path_factory.mktemp("run")
    actions = run_all(write_config(root / "tiny.yaml"), root / "run")
    return root, actions


def actions_of(result) -> dict[str, str]:
    return {stage: action for stage, action, _ in result}


def mtimes(run: Path) -> dict[str, int]:
    """Modification times of one file each stage writes last (or near it)."""
    files = {
        "data": "videos.zarr/zarr.json",
        "train_ae": "ae/checkpoints/latest",
        "encode": "latents.zarr/zarr.json",
        "train_predictor": "predictor/checkpoints/latest",
        "generate": "generated/metrics.json",
        "evaluate": "evaluation/evaluation.json",
    }
    return {stage: (run / f).stat().st_mtime_ns for stage, f in files.items()}


def test_runs_every_stage_then_skips_or_redoes_only_what_changed(first):
    root, actions = first
    run = root / "run"
    assert actions_of(actions) == dict.fromkeys(STAGES, "run")
    assert all((run / name).exists() for name in LAYOUT.values())
    assert json.loads((run / "evaluation/evaluation.json").read_text())["prediction"]["future"] == 3
    before = mtimes(run)
    again = run_all(root / "tiny.yaml", run)
    assert actions_of(again) == dict.fromkeys(STAGES, "skip") and mtimes(run) == before
    log = (run / "run.log").read_text().splitlines()
    assert len(log) == 12 and log[-1].endswith("evaluate skip: up to date")
    # A new predictor width: that stage and those reading its weights run; the rest is kept.
    changed = run_all(write_config(root / "wider.yaml", train_predictor={"hidden": 6}), run)
    assert actions_of(changed) == {"data": "skip", "train_ae": "skip", "encode": "skip",
                                   "train_predictor": "run", "generate": "run",
                                   "evaluate": "run"}  # fmt: skip
    after = mtimes(run)
    assert all(after[s] == before[s] for s in ("data", "train_ae", "encode"))
    assert after["train_predictor"] > before["train_predictor"]


def test_training_resumes_and_interrupted_stages_finish(first, tmp_path):
    root, _ = first
    run = root / "run"
    run_all(root / "tiny.yaml", run)  # whatever the other test left: back to TINY
    longer = run_all(write_config(tmp_path / "longer.yaml", train_ae={"steps": 4}), run)
    assert longer[1] == ("train_ae", "resume", "checkpoint at step 2 of 4")
    assert actions_of(longer)["encode"] == "run"  # a new encoder: everything after reruns
    (run / "evaluation" / "evaluation.json").unlink()  # as if evaluate had crashed
    resumed = run_all(tmp_path / "longer.yaml", run)
    assert resumed[-1] == ("evaluate", "run", "its output is incomplete")
    assert [a for _, a, _ in resumed[:-1]] == ["skip"] * 5


def test_stages_record_their_defaults_and_older_run_folders_still_skip(first, tmp_path):
    root, _ = first
    run = root / "run"
    run_all(root / "tiny.yaml", run)  # whatever the other tests left: back to TINY
    folders = {"train_ae": "ae", "train_predictor": "predictor", "generate": "generated",
               "evaluate": "evaluation"}  # fmt: skip
    written = {s: yaml.safe_load((run / f / "config.yaml").read_text()) for s, f in folders.items()}
    assert set(written["train_ae"]["model_params"]) > set(TINY["train_ae"]["model_params"])
    assert written["train_predictor"]["lr"] == 1e-3
    for stage in ("generate", "evaluate"):  # None in TINY: the predictor's window
        assert (written[stage]["past"], written[stage]["future"]) == (4, 3)
    # A run folder of a vidlat that wrote each section as given (null past, model_params as set)
    # is the same run: nothing is redone.
    cfg = load_run_config(root / "tiny.yaml")
    for stage, folder in folders.items():
        older = json.loads(getattr(cfg, stage).model_dump_json())
        (run / folder / "config.yaml").write_text(yaml.safe_dump(older))
    before = mtimes(run)
    assert actions_of(run_all(root / "tiny.yaml", run)) == dict.fromkeys(STAGES, "skip")
    assert mtimes(run) == before
    # An explicit past, then the default again: the recorded 2 is not the predictor's 4, so
    # generate reruns both times (a default is compared as the value it stands for).
    two = run_all(write_config(tmp_path / "two.yaml", generate={"past": 2}), run)
    assert actions_of(two)["generate"] == "run"
    assert yaml.safe_load((run / "generated" / "config.yaml").read_text())["past"] == 2
    back = run_all(root / "tiny.yaml", run)
    assert actions_of(back)["generate"] == "run" and actions_of(back)["train_predictor"] == "skip"


def test_bad_config_files_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, "train_ae": {"stepz": 3}}))
    with pytest.raises(ConfigError, match="train_ae.stepz"):
        load_run_config(path)
    path.write_text(yaml.safe_dump({**TINY, "source": "moving-mnist"}))
    with pytest.raises(ConfigError, match="mnist"):
        load_run_config(path)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    raw = yaml.safe_load(path.read_text())
    model = (raw.get("train_ae") or {}).get("model", "drnet")
    assert model in STAGE1_MODELS
    cfg = load_run_config(path)
    assert cfg.train_predictor.past + cfg.train_predictor.future <= cfg.data_config().frames


def test_cli_run_evaluate_report(first, tmp_path):
    root, _ = first
    app = typer.Typer(cls=VidlatGroup)
    app.command("run")(evaluate_cmd.run_cmd)
    app.command("evaluate")(evaluate_cmd.evaluate_cmd)
    app.command("report")(evaluate_cmd.report_cmd)
    runner, run = CliRunner(), root / "run"
    result = runner.invoke(app, ["run", "--config", str(root / "tiny.yaml"), "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert "data: skip (up to date)" in result.output
    result = runner.invoke(app, ["evaluate", str(run), "--no-disentanglement", "-q"])
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output and "probes" not in result.output
    out = tmp_path / "report.md"
    result = runner.invoke(app, ["report", str(run), str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "| run (2) |" in out.read_text()
    result = runner.invoke(app, ["evaluate", "--ae", str(run / "ae")])
    assert result.exit_code == 1 and "missing --predictor --latents --data --out" in result.output
