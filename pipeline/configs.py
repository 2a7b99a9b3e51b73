"""The commands' configs: which config each command reads, the pipeline's own ones (generate,
evaluate with its probes and MIG), the field defaults `--help` shows, and the full resolved config
as YAML (`vidlat config show COMMAND`).

Torch-free, as is every config module it names (the stages' ones are their folders' configs.py),
so `vidlat COMMAND --help` and `vidlat config show` never import torch; the CLI imports this module
inside its commands only (the choices it needs at start-up are pipeline/choices.py's).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from vidlat.config import SECTIONS, Config, apply_sets, read_config_file, resolve_config
from vidlat.errors import ConfigError

MAX_FUTURE = 4096  # frames; GIFs and grids of more overflow Pillow, and nobody reads them


class GenerateConfig(Config):
    """Which videos to continue and how far; defaults come from the predictor's training."""

    videos: str | None = Field(
        None,
        description="video indices of a dataset: 'A:B' or 'i,j,k'; default: the first 8 videos "
        "of its test split, so metrics are on videos no model was trained on",
    )
    past: int | None = Field(None, ge=1, description="observed frames (default: as trained)")
    future: int | None = Field(
        None, ge=1, le=MAX_FUTURE, description=f"frames to predict (up to {MAX_FUTURE})"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where models run")
    npy: bool = Field(False, description="also write predicted.npy (B, F, H, W, C) uint8")
    fps: int = Field(8, ge=1, description="GIF frame rate")
    samples: int = Field(1, ge=1, description="futures per video (K > 1: a stochastic predictor)")
    seed: int | None = Field(None, description="seeds the sampled futures (None: unseeded)")
    interpolate: list[str] = Field(
        default_factory=list,
        description="latent fields to interpolate between two frames (main paper, Figure 4), "
        "or 'all'; writes interpolate.png",
    )
    between: str | None = Field(
        None,
        description="the two frames to interpolate between, 'V:T,V:T' (video:frame); default: "
        "frame 0 of the first two chosen videos",
    )
    interpolate_steps: int = Field(8, ge=2, description="frames per interpolation row")
    select: Literal["best", "latest"] = Field(
        "best",
        description="predictor checkpoint: best (lowest validation future error; latest when the "
        "run kept none) or latest",
    )
    context: int = Field(
        1,
        ge=1,
        description="observed frames whose skips a stage-1 model with skips averages to decode "
        "(1: the last observed frame)",
    )
    frames: int | None = Field(
        None,
        ge=1,
        description="--data as video files: frames per clip cut from each (default: past + future)",
    )
    stride: int = Field(1, ge=1, description="--data as video files: keep every stride-th frame")
    mp4: bool = Field(True, description="also write gifs/NNN.mp4 when PyAV (vidlat[video]) is here")


class ProbeConfig(Config):
    """The probes' size and fixed training budget."""

    hidden: int = Field(128, ge=1, description="units of each of the probe's two hidden layers")
    steps: int = Field(1500, ge=1, description="Adam steps per probe (a fixed budget)")
    batch_size: int = Field(256, ge=1, description="frames per step")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    max_frames: int = Field(20000, ge=10, description="most frames per split used (random pick)")
    shape_task: Literal["multiset", "sum"] = Field(
        "multiset", description="shape target: multiset of classes, or their sum (digit sum)"
    )
    seed: int = Field(0, description="seeds the frame choice, the weights and the batches")


class MigConfig(Config):
    """How MIG is estimated."""

    samples: int = Field(
        4000, ge=10, description="videos sampled (one random frame each), from all splits"
    )
    k: int = Field(3, ge=1, description="neighbours of the Ross kNN mutual-information estimator")
    bins: int = Field(10, ge=2, description="equal-frequency bins of each continuous (pose) factor")
    dim_bins: int = Field(20, ge=2, description="bins per latent dimension of the per-dim MIG")
    seed: int = Field(0, description="seeds the frame choice and the tie-breaking jitter")


class EvaluateConfig(Config):
    """What `vidlat evaluate` measures and on how much data."""

    videos: int = Field(256, ge=1, description="test-split videos for the prediction metrics")
    past: int | None = Field(None, ge=1, description="observed frames (default: as trained)")
    future: int | None = Field(
        None, ge=1, description="predicted frames (default: as trained; cut to what videos hold)"
    )
    samples: int = Field(
        8, ge=1, description="K futures per video for predictors that sample (best-of-K, mean)"
    )
    batch_size: int = Field(256, ge=1, description="frames per decoder forward pass")
    seed: int = Field(0, description="seeds the futures drawn by predictors that sample")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where the models run")
    select: Literal["best", "latest"] = Field(
        "best",
        description="predictor checkpoint: best (lowest validation future error; latest when the "
        "run kept none) or latest",
    )
    context: int = Field(
        1, ge=1, description="observed frames whose skips a model with skips averages to decode"
    )
    disentanglement: bool = Field(
        True, description="probes and MIG when the store holds ground-truth factors"
    )
    probes: ProbeConfig = Field(default_factory=ProbeConfig, description="Table 1 probes")
    mig: MigConfig = Field(default_factory=MigConfig, description="MIG estimation")


# command -> (module, class, section of a whole-pipeline config file); imported on use only.
COMMAND_CONFIGS: dict[str, tuple[str, str, str]] = {
    "train-ae": ("vidlat.stages.training.configs", "TrainAEConfig", "train_ae"),
    "encode": ("vidlat.stages.inference.configs", "EncodeConfig", "encode"),
    "train-predictor": (
        "vidlat.stages.training.configs",
        "TrainPredictorConfig",
        "train_predictor",
    ),
    "train-generator": (
        "vidlat.stages.training.configs",
        "TrainGeneratorConfig",
        "train_generator",
    ),
    "generate": ("vidlat.pipeline.configs", "GenerateConfig", "generate"),
    "evaluate": ("vidlat.pipeline.configs", "EvaluateConfig", "evaluate"),
    "data synth": ("vidlat.pipeline.sources.configs", "SynthConfig", "data"),
    "data moving-mnist": ("vidlat.pipeline.sources.configs", "MovingMnistConfig", "data"),
    "data import": ("vidlat.pipeline.sources.configs", "ImportConfig", "data"),
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
