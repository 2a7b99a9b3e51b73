"""The choices the CLI offers before any command runs (--model, --kind): the stages' registries,
which name their classes without importing them, so `vidlat --help` and tab completion start
without torch or pydantic."""

from __future__ import annotations

from vidlat.stages.stage1 import STAGE1_MODELS
from vidlat.stages.stage2 import PREDICTORS

__all__ = ["PREDICTORS", "STAGE1_MODELS"]
