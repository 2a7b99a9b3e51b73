"""--help shows the config defaults and no `<bool>` for flags; `vidlat config show` prints the
full config a command runs with; the app, every --help and tab completion import no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

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


# Modules `vidlat --help`, `vidlat COMMAND --help` and tab completion must not import: they cost
# seconds (torch alone ~2.5 s) before Typer prints a line.
HEAVY = ("torch", "zarr", "dask", "numpy", "PIL", "vidlat.stages.stage1.drnet")


def imported_by(code: str, env: dict[str, str] | None = None) -> dict:
    """Run `code` in a fresh interpreter (sys.modules empty of vidlat); its last stdout line is
    JSON."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
        env={**os.environ, **(env or {})}, check=True, timeout=120,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_app_imports_neither_torch_nor_pydantic():
    found = imported_by(f"""
        import json, sys
        import vidlat.cli.app
        print(json.dumps([m for m in {HEAVY + ("pydantic", "vidlat.config")} if m in sys.modules]))
    """)
    assert found == []


def test_every_help_and_tab_completion_import_no_torch():
    found = imported_by(
        f"""
        import contextlib, io, json, os, sys
        import typer
        from vidlat.cli.app import app, main

        def paths(command, prefix):
            yield prefix
            for name, sub in getattr(command, "commands", {{}}).items():
                yield from paths(sub, [*prefix, name])

        helps = list(paths(typer.main.get_command(app), []))
        for argv in helps:
            sys.argv = ["vidlat", *argv, "--help"]
            try:
                main()
            except SystemExit as exc:
                assert exc.code in (0, None), (argv, exc.code)
        os.environ["_VIDLAT_COMPLETE"] = "complete_bash"  # what a TAB after --model runs
        os.environ |= {{"COMP_WORDS": "vidlat train-ae --model ", "COMP_CWORD": "3"}}
        with contextlib.redirect_stdout(io.StringIO()) as completed:
            try:
                main()
            except SystemExit:
                pass
        heavy = [m for m in {HEAVY} if m in sys.modules]
        print()
        print(json.dumps({{"helps": [" ".join(h) for h in helps], "heavy": heavy,
                          "completed": completed.getvalue().split()}}))
    """,
        env={"COLUMNS": "100"},
    )
    assert found["heavy"] == []
    assert {"", "train-ae", "generate", "data synth", "config show"} <= set(found["helps"])
    assert found["completed"] == ["drnet", "mipae", "hierarchical"]
