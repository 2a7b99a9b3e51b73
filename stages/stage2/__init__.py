"""Stage-2 models on latents: the predictor registry (also the CLI's --kind choices) and builder.

The registry names each predictor's module and class, imported when one is asked for: the CLI reads
the choices at start-up (`vidlat --help`, tab completion) without importing torch or building any
pydantic model. The predictors' settings are PredictorConfig of stages/stage2/configs.py.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vidlat.errors import ConfigError

if TYPE_CHECKING:
    from vidlat.stages.stage2.base import LatentPredictor
    from vidlat.stages.stage2.configs import PredictorConfig
    from vidlat.store.format import FieldSpec

__all__ = ["PREDICTORS", "build_predictor", "predictor_class"]

# kind -> (module, class)
PREDICTORS: dict[str, tuple[str, str]] = {
    "lstm": ("vidlat.stages.stage2.lstm", "PoseLSTM"),
    "lstm-delta": ("vidlat.stages.stage2.lstm", "DeltaLSTM"),
    "svg": ("vidlat.stages.stage2.svg", "SVGPredictor"),
}


def predictor_class(kind: str) -> type[LatentPredictor]:
    """The class of predictor `kind`; ConfigError naming the choices for another kind."""
    if kind not in PREDICTORS:
        raise ConfigError(f"unknown predictor {kind!r}; choose one of {', '.join(PREDICTORS)}")
    module, cls = PREDICTORS[kind]
    return getattr(importlib.import_module(module), cls)


def build_predictor(cfg: PredictorConfig, specs: Sequence[FieldSpec]) -> LatentPredictor:
    """A predictor of `cfg.kind` for a store with fields `specs` (statistics still at 0/1)."""
    return predictor_class(cfg.kind)(specs, cfg)
