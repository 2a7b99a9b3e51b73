"""--help shows the config defaults and no `<bool>` for flags; `vidlat config show` prints the
full config a command runs with."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from vidlat.cli.app import app
from vidlat.stages.training.train_ae import TrainAEConfig


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})


def test_help_shows_config_defaults_and_bare_flags():
    result = run("train-ae", "--help")
    assert result.exit_code == 0, result.output
    steps = next(ln for ln in result.output.splitlines() if "--steps" in ln)
    assert f"[default: {TrainAEConfig().steps}]" in steps
    resume = next(ln for ln in result.output.splitlines() if "--resume" in ln)
    assert "<bool>" not in resume and "<bool>" not in result.output
    generate = run("generate", "--help").output
    assert "list[str]" not in generate and "[default: 8]" in generate  # --fps


def test_a_config_file_still_wins_over_the_defaults_help_shows(tmp_path):
    # The help's defaults are for display only: an option not typed is still None, so the file wins.
    (tmp_path / "c.yaml").write_text("steps: 0\n")
    result = run("config", "show", "train-ae", "--config", str(tmp_path / "c.yaml"))
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["steps"] == 0 and shown["batch_size"] == TrainAEConfig().batch_size
    assert set(shown) == set(TrainAEConfig.model_fields)


def test_config_show_of_every_command():
    for command in (["generate"], ["data", "import"], ["encode"], ["train-predictor"]):
        result = run("config", "show", *command)
        assert result.exit_code == 0, result.output
        assert isinstance(yaml.safe_load(result.output), dict)
    assert "<required>" in run("config", "show", "data", "import").output  # src
    bad = run("config", "show", "nope")
    assert bad.exit_code == 1 and "commands with one" in bad.output


def test_set_reaches_any_field_dotted_and_typed_flags_win(tmp_path):
    from vidlat.config import apply_sets, resolve_config
    from vidlat.errors import ConfigError

    cfg = resolve_config(
        TrainAEConfig,
        sets=["lr=1e-3", "model_params.width=32", "model_params.content_dim=16", "steps=9"],
        steps=3,  # a typed --steps wins over --set steps=9
    )
    assert cfg.lr == 1e-3 and cfg.steps == 3
    assert cfg.model_params == {"width": 32, "content_dim": 16}
    assert apply_sets({"a": {"b": 1}}, ["a.c=[1, 2]", "d=text"]) == {
        "a": {"b": 1, "c": [1, 2]},
        "d": "text",
    }
    for bad in ("novalue", "a..b=1", "=3"):
        with pytest.raises(ConfigError, match="KEY=VALUE"):
            apply_sets({}, [bad])
    result = run("config", "show", "train-ae", "--set", "model_params.width=32", "--set", "lr=0.01")
    shown = yaml.safe_load(result.output)
    assert shown["model_params"] == {"width": 32} and shown["lr"] == 0.01
    unknown = run("config", "show", "train-ae", "--set", "widht=3")
    assert unknown.exit_code == 1 and "widht: unknown key" in unknown.output


def test_select_and_test_videos_are_the_documented_names_and_videos_still_works():
    generate = run("generate", "--help").output
    assert "--select" in generate and "--videos" in generate
    assert "--test-videos" in run("evaluate", "--help").output
