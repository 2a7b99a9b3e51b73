"""What each single-stage command runs: its inputs opened from paths, then one stage called.

The CLI turns options into a config (from pipeline.configs, torch-free) and calls one function
here (or of pipeline.generate, pipeline.evaluate, pipeline.run), imported inside its command so that
`--help` never imports torch; it imports nothing below the pipeline.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vidlat.errors import ConfigError
from vidlat.stages.common import distributed
from vidlat.stages.inference.encode import encode, verify_store
from vidlat.stages.training import train_ae as ae_trainer
from vidlat.stages.training import train_generator as generator_trainer
from vidlat.stages.training import train_predictor as predictor_trainer
from vidlat.stages.training.configs import (
    TrainAEConfig,
    TrainGeneratorConfig,
    TrainPredictorConfig,
)
from vidlat.stages.training.online import OnlineLatents
from vidlat.store import places
from vidlat.store.reader import LatentStore
from vidlat.store.videos import open_videos

__all__ = [
    "encode", "leave_if_rank", "predictor_source", "train_ae", "train_generator",
    "train_predictor", "verify_store",
]  # fmt: skip


def check_run_folder(out: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """A training --out: not an input nor inside or around one, not a file, writable."""
    places.refuse_overlap(Path(out), inputs)
    places.check_writable(Path(out))


def train_ae(data: str | Path, cfg: TrainAEConfig, out: str | Path, resume: bool = False) -> Path:
    """`vidlat train-ae`: stage 1 on the video dataset at `data`."""
    check_run_folder(out, {"--data": data})
    return ae_trainer.train_ae(open_videos(data), cfg, out, resume=resume)


def predictor_source(
    cfg: TrainPredictorConfig,
    latents: str | None = None,
    data: str | Path | None = None,
    ae: str | Path | None = None,
) -> LatentStore | OnlineLatents:
    """What train-predictor's windows come from, by cfg.source: the store at `latents`, or the
    videos at `data` through the frozen encoder of `ae` (the baseline). Paths that belong to the
    other source are refused, so a user never trains on something they did not mean."""
    if cfg.source == "online":
        if latents is not None:
            raise ConfigError("--source online re-encodes --data through --ae; drop --latents")
        if data is None or ae is None:
            raise ConfigError("--source online needs --data and --ae")
        return OnlineLatents(data, ae, cfg.device)
    if data is not None or ae is not None:
        raise ConfigError(
            "--data and --ae go with --source online; the store source reads --latents"
        )
    if latents is None:
        raise ConfigError("--source store needs --latents")
    return LatentStore.open(latents)


def train_predictor(
    cfg: TrainPredictorConfig,
    out: str | Path,
    resume: bool = False,
    latents: str | None = None,
    data: str | Path | None = None,
    ae: str | Path | None = None,
) -> Path:
    """`vidlat train-predictor`: stage 2 on the store (--source online: re-encoded videos)."""
    check_run_folder(out, {"--latents": latents, "--data": data, "--ae": ae})
    source = predictor_source(cfg, latents, data, ae)
    return predictor_trainer.train_predictor(source, cfg, out, resume=resume)


def train_generator(
    latents: str, cfg: TrainGeneratorConfig, out: str | Path, resume: bool = False
) -> Path:
    """`vidlat train-generator`: AVLAE on the latent store at `latents`."""
    check_run_folder(out, {"--latents": latents})
    return generator_trainer.train_generator(LatentStore.open(latents), cfg, out, resume=resume)


def leave_if_rank(code: int | str | None) -> None:
    """End a torchrun worker whose command has returned (with SystemExit's `code`) through
    distributed.exit_rank, which says why; return at once in any other process."""
    if not distributed.joined():
        return
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    distributed.exit_rank(code or 0)
