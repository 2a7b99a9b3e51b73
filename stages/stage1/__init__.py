"""Stage-1 frame autoencoders: the model registry (also the CLI's --model choices) and builder.

The registry names each model's module and class, imported when a model is asked for: the CLI
reads the choices at start-up (`vidlat --help`, tab completion) without importing torch or building
any pydantic model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vidlat.errors import ConfigError

if TYPE_CHECKING:
    from vidlat.config import Config
    from vidlat.stages.stage1.base import Stage1Model

__all__ = ["STAGE1_MODELS", "build_stage1", "model_class", "resolve_model_config"]

# name (the class's `name`) -> (module, class)
STAGE1_MODELS: dict[str, tuple[str, str]] = {
    "drnet": ("vidlat.stages.stage1.drnet", "Drnet"),
    "mipae": ("vidlat.stages.stage1.drnet", "Mipae"),
    "hierarchical": ("vidlat.stages.stage1.hierarchical.model", "Hierarchical"),
}


def model_class(name: str) -> type[Stage1Model]:
    """The class of stage-1 model `name`; ConfigError naming the choices for another name."""
    if name not in STAGE1_MODELS:
        raise ConfigError(
            f"stage-1 model {name!r} is unknown; choose one of {', '.join(sorted(STAGE1_MODELS))}"
        )
    module, cls = STAGE1_MODELS[name]
    return getattr(importlib.import_module(module), cls)


def resolve_model_config(name: str, config: dict[str, Any] | None) -> Config:
    """Validate model settings into the model's config class (defaults filled in)."""
    from pydantic import ValidationError  # here, not above: see the module docstring

    from vidlat.config import format_validation_error

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
