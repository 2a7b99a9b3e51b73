"""Which config each command reads, its field defaults, and the full resolved config as YAML
(`vidlat config show COMMAND`, and the defaults `--help` shows)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from vidlat.config import SECTIONS, Config, apply_sets, read_config_file, resolve_config
from vidlat.errors import ConfigError

# command -> (module, class, section of a whole-pipeline config file); imported on use only.
COMMAND_CONFIGS: dict[str, tuple[str, str, str]] = {
    "train-ae": ("vidlat.stages.training.train_ae", "TrainAEConfig", "train_ae"),
    "encode": ("vidlat.stages.inference.encode", "EncodeConfig", "encode"),
    "train-predictor": (
        "vidlat.stages.training.train_predictor",
        "TrainPredictorConfig",
        "train_predictor",
    ),
    "train-generator": (
        "vidlat.stages.training.train_generator",
        "TrainGeneratorConfig",
        "train_generator",
    ),
    "generate": ("vidlat.pipeline.generate", "GenerateConfig", "generate"),
    "evaluate": ("vidlat.pipeline.evaluate", "EvaluateConfig", "evaluate"),
    "data synth": ("vidlat.pipeline.sources.synth", "SynthConfig", "data"),
    "data moving-mnist": ("vidlat.pipeline.sources.moving_mnist", "MovingMnistConfig", "data"),
    "data import": ("vidlat.pipeline.sources.imported", "ImportConfig", "data"),
}
REQUIRED = "<required>"


def config_class(command: str) -> tuple[type[Config], str]:
    """(config class, file section) of `command`; ConfigError naming the commands otherwise."""
    if command not in COMMAND_CONFIGS:
        raise ConfigError(
            f"no config for {command!r}; commands with one: {', '.join(COMMAND_CONFIGS)}"
        )
    module, name, section = COMMAND_CONFIGS[command]
    return getattr(importlib.import_module(module), name), section


def field_defaults(cls: type[Config]) -> dict[str, Any]:
    """Each field's default as plain JSON types (REQUIRED for required fields)."""
    out = {}
    for name, field in cls.model_fields.items():
        if field.is_required():
            out[name] = REQUIRED
        else:
            value = field.get_default(call_default_factory=True)
            out[name] = json.loads(json.dumps(value, default=str))
    return out


def show_config(
    command: str, config_file: str | Path | None = None, sets: Sequence[str] | None = None
) -> str:
    """The full config `command` would run with, as YAML: every default, overridden by
    `config_file` (its section of a whole-pipeline file) and validated as the command would; a
    required field nothing gives shows as <required>."""
    cls, section = config_class(command)
    data = field_defaults(cls)
    given = read_config_file(config_file) if config_file is not None else {}
    if SECTIONS & given.keys():
        given = dict(given.get(section) or {})
    data = apply_sets(data | given, sets or [])
    if REQUIRED not in data.values():
        data = json.loads(resolve_config(cls, config_file, section, sets).model_dump_json())
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
