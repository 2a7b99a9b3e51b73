"""Load any run folder's model: one `load_run(dir, kind)` for stage 1, predictors and AVLAE."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from vidlat.errors import CheckpointError, VidlatError
from vidlat.stages.common.checkpoint import (
    LATEST,
    STATE_FILE,
    load_checkpoint,
    load_weights,
    validation_problem,
)
from vidlat.store.format import FieldSpec


class RunMeta(BaseModel):
    """The `meta` of a checkpoint's state.json, as far as loading its model needs it."""

    model_config = ConfigDict(extra="allow")
    kind: str
    config: dict[str, Any]


class Stage1Meta(RunMeta):
    model: str
    image_size: int
    channels: int


class LatentMeta(RunMeta):
    fields: list[dict[str, Any]]


META = {"stage1": Stage1Meta, "predictor": LatentMeta, "generator": LatentMeta}


def _upgraded(cls: type[BaseModel], config: dict[str, Any] | None) -> dict[str, Any]:
    """A stored config as `cls` reads it today: keys missing from an older checkpoint's config
    mean that version's behaviour, not today's default (the class's `upgrade_stored`, if any)."""
    upgrade = getattr(cls, "upgrade_stored", None)
    return upgrade(dict(config or {})) if upgrade else dict(config or {})


def _settings(cls: type[BaseModel], meta: dict[str, Any]) -> BaseModel:
    """The model's own settings out of a run's resolved config (which also holds training's)."""
    config = _upgraded(cls, meta["config"])
    return cls.model_validate({k: v for k, v in config.items() if k in cls.model_fields})


def _specs(meta: dict[str, Any]) -> list[FieldSpec]:
    return [FieldSpec.from_json(d) for d in meta["fields"]]


# Each builder imports its own family when called: stage 2 loads a predictor without ever
# importing a stage-1 module (DESIGN: no code path of stage 2 imports one).


def _stage1(meta: dict[str, Any]) -> nn.Module:
    from vidlat.stages.stage1 import build_stage1, model_class

    config = _upgraded(model_class(meta["model"]).config_class, meta["config"])
    return build_stage1(meta["model"], config, meta["image_size"], meta["channels"])


def _predictor(meta: dict[str, Any]) -> nn.Module:
    from vidlat.stages.stage2 import build_predictor
    from vidlat.stages.stage2.configs import PredictorConfig

    return build_predictor(_settings(PredictorConfig, meta), _specs(meta))


def _generator(meta: dict[str, Any]) -> nn.Module:
    from vidlat.stages.stage2.avlae import AVLAE
    from vidlat.stages.stage2.configs import GeneratorConfig

    return AVLAE(_specs(meta), _settings(GeneratorConfig, meta))


# kind (meta["kind"] of a checkpoint) -> (what makes its model from the meta, which command made it)
BUILDERS: dict[str, tuple[Callable[[dict[str, Any]], nn.Module], str]] = {
    "stage1": (_stage1, "train-ae"),
    "predictor": (_predictor, "train-predictor"),
    "generator": (_generator, "train-generator"),
}
WHAT = {"stage1": "a stage-1 autoencoder", "predictor": "a predictor", "generator": "a generator"}


def load_run(
    run_dir: str | Path, kind: str, device: torch.device | str = "cpu", select: str = LATEST
) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a run folder's latest checkpoint (select "best": the one the run marked best,
    e.g. a predictor's lowest validation error; latest when none is marked), on `device`, in eval
    mode, and the checkpoint's meta. `kind`: "stage1", "predictor" or "generator"."""
    build, command = BUILDERS[kind]
    ckpt = load_checkpoint(run_dir, optimizers=False, select=select)
    meta = ckpt.meta
    if meta.get("kind") != kind:
        raise CheckpointError(
            f"{run_dir} holds a {meta.get('kind', 'unknown')!r} checkpoint, not {WHAT[kind]}; "
            f"give the --out folder of vidlat {command}"
        )
    try:
        META[kind].model_validate(meta)
    except ValidationError as exc:
        raise CheckpointError(
            f"{ckpt.path / STATE_FILE} is damaged or hand-edited (meta {validation_problem(exc)}); "
            "use another checkpoint or train again"
        ) from None
    try:
        model = build(meta)
    except VidlatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:  # settings a hand edit made inconsistent
        raise CheckpointError(
            f"{ckpt.path / STATE_FILE} does not describe a buildable {kind} model "
            f"({type(exc).__name__}: {exc}); use another checkpoint or train again"
        ) from None
    load_weights(model, ckpt.module_state("model"), ckpt.path)
    return model.to(device).eval(), meta
