"""Stage-1 frame autoencoders: the model registry (also the CLI's --model choices) and builder."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from vidlat.config import Config, format_validation_error
from vidlat.errors import ConfigError
from vidlat.stages.stage1.base import KIND, Stage1Model
from vidlat.stages.stage1.drnet import Drnet, Mipae
from vidlat.stages.stage1.hierarchical import Hierarchical

__all__ = ["KIND", "STAGE1_MODELS", "Stage1Model", "build_stage1", "model_class"]

STAGE1_MODELS: dict[str, type[Stage1Model]] = {m.name: m for m in (Drnet, Mipae, Hierarchical)}


def model_class(name: str) -> type[Stage1Model]:
    if name not in STAGE1_MODELS:
        raise ConfigError(
            f"stage-1 model {name!r} is unknown; choose one of {', '.join(sorted(STAGE1_MODELS))}"
        )
    return STAGE1_MODELS[name]


def resolve_model_config(name: str, config: dict[str, Any] | None) -> Config:
    """Validate model settings into the model's config class (defaults filled in)."""
    cls = model_class(name)
    try:
        return cls.config_class.model_validate(config or {})
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(cls.config_class, exc, f"{name} model settings")
        ) from None


def build_stage1(
    name: str, config: dict[str, Any] | None, image_size: int, channels: int
) -> Stage1Model:
    """A freshly initialised model `name` for square frames of `image_size` with `channels`."""
    return model_class(name)(resolve_model_config(name, config), image_size, channels)
