"""Config files and flags: flags win even at 0 or False; bad keys and types name the key."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import Field

from vidlat.config import Config, resolve_config, write_resolved
from vidlat.errors import ConfigError


class Toy(Config):
    steps: int = Field(100, description="training steps")
    flag: bool = Field(True, description="a switch")
    rate: float = Field(0.5, description="a rate")


def test_flags_beat_file_even_when_zero_or_false(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: 7\nflag: true\nrate: 0.25\n")
    cfg = resolve_config(Toy, path, steps=0, flag=False, rate=None)
    assert (cfg.steps, cfg.flag, cfg.rate) == (0, False, 0.25)


def test_json_file_and_sections(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train_ae": {"steps": 3}, "encode": {"x": 1}}))
    assert resolve_config(Toy, path, section="train_ae").steps == 3
    assert resolve_config(Toy, path, section="generate").steps == 100  # no part: defaults
    flat = tmp_path / "flat.yaml"
    flat.write_text("steps: 4\n")  # a file of one command's fields
    assert resolve_config(Toy, flat, section="train_ae").steps == 4


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("stepz: 3\n")
    with pytest.raises(ConfigError, match="stepz: unknown key"):
        resolve_config(Toy, path)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="steps: Input should be a valid integer"):
        resolve_config(Toy, None, steps="many")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(Toy, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        resolve_config(Toy, bad)


def test_resolved_config_round_trips(tmp_path):
    cfg = resolve_config(Toy, None, steps=5)
    path = write_resolved(cfg, tmp_path / "out")
    assert yaml.safe_load(path.read_text()) == {"steps": 5, "flag": True, "rate": 0.5}
    assert resolve_config(Toy, path) == cfg
