"""`vidlat train-generator`: AVLAE on the latent store, Algorithm 1 as the one driver's step.

Real sequences are windows of `frames` frames from the store's train split (WindowSampler); no
pixel is read and no stage-1 module is imported. Before training, per-feature mean/std of every
latent field and the RMS frame-to-frame step of each normalised pose feature are measured on the
train split and kept as buffers, so sequences go in and come out in the store's units. Every
`eval_every` steps the latent Fréchet distance ("latent_fd": a Fréchet distance between Gaussians
fitted to real and generated latent sequences; not FVD, which needs pixels and an I3D network) is
logged, always on the same real windows and the same noise, so its curve shows training alone.
Runs resume exactly, and run under torchrun, as every trainer's (vidlat.stages.training.loop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidlat.errors import ConfigError, DataError
from vidlat.stages.common import distributed
from vidlat.stages.common.runs import ResumeRule
from vidlat.stages.stage2.avlae import (
    AVLAE,
    discriminator_step,
    generator_step,
    reconstruction_step,
)
from vidlat.stages.stage2.configs import GeneratorConfig
from vidlat.stages.training.configs import TrainGeneratorConfig
from vidlat.stages.training.loop import Job, StepContext, train
from vidlat.stages.training.train_predictor import latent_stats, store_meta, to_device
from vidlat.store.reader import LatentStore
from vidlat.store.sampler import WindowSampler

KIND = "generator"
RESUME = ResumeRule(
    meta_keys=("fields", "encoder_hash"),
    free_config=frozenset(
        {"steps", "lr", "device", "amp", "log_every", "eval_every", "eval_samples"}
        | {"checkpoint_every", "keep", "threads", "tensorboard"}
    ),
    hint="Resume with the same settings and --latents",
    upgrade=GeneratorConfig.upgrade_stored,
)


DEFAULT_LR = 2e-4  # Adam, betas (0.5, 0.999) (paper)


def _sqrt_eigenvalues(m: torch.Tensor) -> torch.Tensor:
    """Square roots of the eigenvalues of a symmetric PSD matrix (round-off negatives -> 0)."""
    return torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt()


def latent_frechet_distance(real, fake) -> float:
    """Fréchet distance of Gaussians fitted to feature rows real (N, D) and fake (M, D):
    |μ1 - μ2|² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½), in float64 (numpy or torch in).

    (S1^½ S2 S1^½)^½ has the trace of (S1 S2)^½ but is symmetric, so eigh suffices (no scipy).
    """
    x, y = (torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in (real, fake))
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise DataError(
            f"latent_frechet_distance needs (N, D) and (M, D) rows, N, M >= 2; got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )
    s1, s2 = torch.cov(x.T).reshape(x.shape[1], -1), torch.cov(y.T).reshape(y.shape[1], -1)
    evals, evecs = torch.linalg.eigh(s1)
    root1 = evecs @ torch.diag(evals.clamp(min=0).sqrt()) @ evecs.T  # S1^½
    cross = _sqrt_eigenvalues(root1 @ s2 @ root1).sum()
    fd = ((x.mean(0) - y.mean(0)) ** 2).sum() + s1.trace() + s2.trace() - 2 * cross
    return max(float(fd), 0.0)


def build_run(store: LatentStore, cfg: TrainGeneratorConfig) -> tuple[AVLAE, dict]:
    """The AVLAE for `store` with its statistics set, and the meta its checkpoints carry."""
    model = AVLAE(list(store.fields.values()), cfg.generator_config())
    if store.n_frames < cfg.frames:
        raise ConfigError(
            f"frames={cfg.frames} is longer than the store's videos ({store.n_frames} frames); "
            f"use frames <= {store.n_frames}"
        )
    stats = latent_stats(store, list(model.fields), cfg.stats_videos)
    model.set_stats(stats["mean"], stats["std"], stats["delta_rms"])
    return model, store_meta(store, KIND, cfg, stats)


class LatentFD:
    """latent_fd of a generator against fixed real windows, with the same noise every time."""

    def __init__(self, store: LatentStore, model: AVLAE, cfg: TrainGeneratorConfig, device):
        self.n, self.batch, self.seed, self.device = (
            cfg.eval_samples,
            cfg.batch_size,
            cfg.seed,
            device,
        )
        sampler = WindowSampler(
            store, window=cfg.frames, batch_size=cfg.batch_size, split=cfg.eval_split,
            fields=list(model.fields), memory_budget=cfg.memory_budget,
            buffer_chunks=cfg.buffer_chunks, seed=cfg.seed + 1,
        )  # fmt: skip
        rows = []
        while sum(len(r) for r in rows) < self.n:
            with torch.no_grad():
                rows.append(model.features(*model.from_store(to_device(sampler.sample(), device))))
        self.real = torch.cat(rows)[: self.n].double().cpu()  # (N, Ds + T * Dp)

    @torch.no_grad()
    def __call__(self, model: AVLAE) -> float:
        noise = torch.Generator(device=self.device).manual_seed(self.seed + 2)
        rows = []
        for start in range(0, self.n, self.batch):
            z_a, z_m = model.noise(min(self.batch, self.n - start), noise)
            rows.append(model.features(*model.generate(z_a, z_m, model.cfg.frames)))
        return latent_frechet_distance(self.real, torch.cat(rows).double().cpu())


def train_iteration(model: AVLAE, window: dict, ctx: StepContext) -> dict[str, torch.Tensor]:
    """Algorithm 1's steps I, II, III on one batch of real windows: {loss_d, loss_g, loss_rec}."""
    real = model.from_store(window)  # static (B, Ds), pose (B, T, Dp)
    b, t = real[1].shape[:2]
    opts, amp, run = ctx.optimizers, ctx.amp, ctx.run
    loss_d = discriminator_step(model, real, opts["disc"], amp, run)
    loss_g = generator_step(model, b, t, opts["gen"], amp, run)
    loss_rec = reconstruction_step(model, b, t, opts, amp, run)
    amp.update()
    return {"loss_d": loss_d, "loss_g": loss_g, "loss_rec": loss_rec}


def used_settings(cfg: TrainGeneratorConfig) -> dict[str, Any]:
    """The fields train-generator fills in itself, as config.yaml records them: the learning rate
    (DEFAULT_LR unless given)."""
    return {"lr": cfg.lr or DEFAULT_LR}


def train_generator(
    store: LatentStore, cfg: TrainGeneratorConfig, out: str | Path, resume: bool = False
) -> Path:
    """Train AVLAE on the train split of `store`; checkpoints and metrics.jsonl in `out`.
    Under torchrun every rank calls this; only rank 0 writes into `out` and measures latent_fd."""
    used = used_settings(cfg)

    def build(ranks: distributed.Ranks) -> Job:
        device = ranks.device
        model, meta = build_run(store, cfg)
        model.to(device).train()
        # {"disc": E_A, E_M, D_I, D_V; "gen": F_A, F_M, G}
        optimizers = model.make_optimizers(used["lr"])
        sampler = WindowSampler(
            store, window=cfg.frames, batch_size=cfg.batch_size, split="train",
            fields=list(model.fields), memory_budget=cfg.memory_budget,
            buffer_chunks=cfg.buffer_chunks, seed=cfg.seed, rank=ranks.rank,
            world_size=ranks.world_size,
        )  # fmt: skip
        fd = LatentFD(store, model, cfg, device) if cfg.eval_every and ranks.is_main else None
        return Job(
            model, optimizers, sampler, meta, RESUME,
            step=lambda window, ctx: train_iteration(model, to_device(window, device), ctx),
            validate=(lambda: {"latent_fd": fd(model)}) if fd else None,
            val_every=cfg.eval_every, validate_at_start=True, used=used,
        )  # fmt: skip

    return train("train-generator", cfg, out, resume, build, cpu_threads=1)  # small MLPs: 1
