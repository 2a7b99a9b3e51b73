"""The trainers' configs (train-ae, train-predictor, train-generator) and what they share.

Torch-free, as are the registries they validate against, so `--help` and `vidlat config show` read
every field's default without importing torch or the models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vidlat.config import Config
from vidlat.stages.stage2 import PREDICTORS
from vidlat.stages.stage2.configs import GeneratorConfig, PredictorConfig


class TrainingConfig(Config):
    """What every trainer shares: how long, how, where, and how often it logs and saves."""

    steps: int = Field(10000, ge=0, description="optimiser steps (each updates every optimiser)")
    batch_size: int = Field(64, ge=1, description="samples per step (per rank under torchrun)")
    lr: float | None = Field(
        None, gt=0, description="learning rate (default: the model family's own)"
    )
    seed: int = Field(0, description="seeds the weights, the noise and the sampler")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA if present")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision (fp16: CUDA)")
    log_every: int = Field(
        50, ge=1, description="steps between metrics.jsonl rows (and plain lines without a TTY)"
    )
    tensorboard: bool = Field(
        True, description="also write TensorBoard event files to OUT/tensorboard (if installed)"
    )
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints (and at end)")
    keep: int = Field(2, ge=1, description="checkpoints kept in checkpoints/")
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads of torch when training on the CPU (default: the trainer's own: "
        "1 for train-predictor and train-generator, whose small LSTM steps stall on more, "
        "torch's one per core for train-ae's convolutions)",
    )


class TrainAEConfig(TrainingConfig):
    """Stage-1 training: which model, how long, how; the model's own settings in model_params."""

    model: str = Field("drnet", description="stage-1 model, a key of STAGE1_MODELS (drnet, mipae)")
    model_params: dict[str, Any] = Field(
        default_factory=dict,
        description="the model's settings, e.g. {pose_dim: 10, width: 64}; see DrnetConfig",
    )
    steps: int = Field(5000, ge=0, description="steps (each updates every optimiser once)")
    max_k: int = Field(8, ge=0, description="K: largest frame offset of a pair (x^t, x^{t+k})")
    min_k: int = Field(
        1,
        ge=0,
        description="smallest frame offset of a pair (0 lets x^t+k = x^t, which teaches a "
        "decoder with skips to copy its content frame)",
    )
    sample_every: int = Field(
        500, ge=0, description="steps between reconstruction grids in samples/ (0: never)"
    )
    val_every: int = Field(
        500,
        ge=0,
        description="steps between validations on val videos (0: never): same-frame "
        "reconstruction MSE, and for slot models on data with factors how well the slots "
        "find the objects (recall, precision, count accuracy)",
    )
    val_videos: int = Field(16, ge=1, description="val videos (all their frames) per validation")
    memory_budget: int = Field(
        2**30, ge=1, description="bytes of uint8 train videos held in memory at once"
    )
    refresh_every: int = Field(
        200, ge=1, description="steps between cache refills when the train split exceeds the budget"
    )

    @field_validator("model")
    @classmethod
    def _known(cls, name: str) -> str:
        # imported here: train-predictor and train-generator import this module, and no code
        # path of stage 2 imports stage 1, not even its registry
        from vidlat.stages.stage1 import STAGE1_MODELS

        if name not in STAGE1_MODELS:
            raise ValueError(f"unknown model; choose one of {', '.join(sorted(STAGE1_MODELS))}")
        return name


class LatentDataConfig(Config):
    """How a trainer on the latent store reads it (train-predictor, train-generator)."""

    memory_budget: int = Field(
        2 * 2**30, ge=1, description="bytes of a split's latents held in memory before streaming"
    )
    buffer_chunks: int = Field(8, ge=1, description="store chunks buffered when streaming")
    stats_videos: int = Field(
        512, ge=1, description="train videos read to measure the normalisation statistics"
    )


class TrainPredictorConfig(PredictorConfig, TrainingConfig, LatentDataConfig):
    """Stage-2 training: the predictor (fields of PredictorConfig), its windows, how long, how.
    lr defaults to 1e-3 (Adam, betas 0.9, 0.999 as DRNET)."""

    past: int = Field(16, ge=1, description="observed frames P of a training window")
    future: int = Field(16, ge=1, description="predicted frames F of a training window")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm (0: no clipping)")
    source: Literal["store", "online"] = Field(
        "store",
        description="store: windows of the latent store; online: pixel windows re-encoded by the "
        "frozen stage-1 encoder every step (DRNET's way, the baseline that `vidlat bench` "
        "measures; slower and heavier, kept for comparison)",
    )
    val_every: int = Field(500, ge=0, description="steps between val-split losses (0: never)")
    val_batches: int = Field(4, ge=1, description="batches of val windows per validation")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in PREDICTORS:
            raise ValueError(f"unknown predictor {kind!r}; choose one of {', '.join(PREDICTORS)}")
        return kind

    @model_validator(mode="after")
    def _window(self) -> TrainPredictorConfig:
        if self.past + self.future < 3:
            raise ValueError("past + future must be at least 3 frames")
        return self

    def predictor_config(self) -> PredictorConfig:
        return PredictorConfig(**self.model_dump(include=set(PredictorConfig.model_fields)))


class TrainGeneratorConfig(GeneratorConfig, TrainingConfig, LatentDataConfig):
    """AVLAE training: the networks (fields of GeneratorConfig), their data, how long, how.
    A step is one iteration of Algorithm 1 (three updates); lr defaults to 2e-4 (paper)."""

    eval_every: int = Field(500, ge=0, description="iterations between latent_fd (0: never)")
    eval_samples: int = Field(1024, ge=2, description="real and generated sequences per latent_fd")
    eval_split: str = Field("train", description="split whose windows are the real sequences")

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(**self.model_dump(include=set(GeneratorConfig.model_fields)))
