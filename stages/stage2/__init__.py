"""Stage-2 models on latents: the predictor registry (also the CLI's --kind choices)."""

from __future__ import annotations

from collections.abc import Sequence

from vidlat.errors import ConfigError
from vidlat.stages.stage2.base import LatentPredictor, PredictorConfig, PredictorOutput
from vidlat.stages.stage2.lstm import DeltaLSTM, PoseLSTM
from vidlat.stages.stage2.svg import SVGPredictor
from vidlat.store.format import FieldSpec

__all__ = [
    "PREDICTORS", "DeltaLSTM", "LatentPredictor", "PoseLSTM", "PredictorConfig", "PredictorOutput",
    "SVGPredictor", "build_predictor", "predictor_class",
]  # fmt: skip

PREDICTORS: dict[str, type[LatentPredictor]] = {
    "lstm": PoseLSTM,
    "lstm-delta": DeltaLSTM,
    "svg": SVGPredictor,
}


def predictor_class(kind: str) -> type[LatentPredictor]:
    if kind not in PREDICTORS:
        raise ConfigError(f"unknown predictor {kind!r}; choose one of {', '.join(PREDICTORS)}")
    return PREDICTORS[kind]


def build_predictor(cfg: PredictorConfig, specs: Sequence[FieldSpec]) -> LatentPredictor:
    """A predictor of `cfg.kind` for a store with fields `specs` (statistics still at 0/1)."""
    return predictor_class(cfg.kind)(specs, cfg)
