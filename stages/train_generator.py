"""`vidlat train-generator`: AVLAE on the latent store, one visible loop of Algorithm 1's steps.

Real sequences are windows of `frames` frames from the store's train split (WindowSampler); no
pixel is read and no stage-1 module is imported. Before training, per-feature mean/std of every
latent field and the RMS frame-to-frame step of each normalised pose feature are measured on the
train split and kept as buffers, so sequences go in and come out in the store's units. Every
`eval_every` steps the latent Fréchet distance ("latent_fd": a Fréchet distance between Gaussians
fitted to real and generated latent sequences; not FVD, which needs pixels and an I3D network) is
logged, always on the same real windows and the same noise, so its curve shows training alone.
Runs resume exactly as train-predictor's (vidlat.stages.runs).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from vidlat.config import write_resolved
from vidlat.errors import CheckpointError, ConfigError, DataError
from vidlat.progress import progress_bar
from vidlat.stages.avlae import (
    AVLAE,
    GeneratorConfig,
    discriminator_step,
    generator_step,
    reconstruction_step,
)
from vidlat.stages.checkpoint import load_checkpoint, save_checkpoint
from vidlat.stages.runs import METRICS, ResumeRule, start_run
from vidlat.stages.runtime import Amp, resolve_device, rng_state, seed_everything
from vidlat.stages.train_predictor import latent_stats, to_device
from vidlat.store.format import FieldSpec
from vidlat.store.reader import LatentStore
from vidlat.store.sampler import WindowSampler

KIND = "generator"
FIXES = ("appearance", "motion")
RESUME = ResumeRule(
    meta_keys=("fields", "encoder_hash"),
    free_config=frozenset(
        {"steps", "lr", "device", "amp", "log_every", "eval_every", "eval_samples"}
        | {"checkpoint_every", "keep"}
    ),
    hint="Resume with the same settings and --latents",
)


class TrainGeneratorConfig(GeneratorConfig):
    """AVLAE training: the networks (fields of GeneratorConfig), their data, how long, how."""

    steps: int = Field(10000, ge=0, description="iterations of Algorithm 1 (three updates each)")
    batch_size: int = Field(64, ge=1, description="real and generated sequences per update")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate, betas (0.5, 0.999) (paper)")
    seed: int = Field(0, description="seeds the weights, the noise and the window sampler")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA if present")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision (fp16: CUDA)")
    log_every: int = Field(50, ge=1, description="iterations between loss lines in metrics.jsonl")
    eval_every: int = Field(500, ge=0, description="iterations between latent_fd (0: never)")
    eval_samples: int = Field(1024, ge=2, description="real and generated sequences per latent_fd")
    eval_split: str = Field("train", description="split whose windows are the real sequences")
    checkpoint_every: int = Field(1000, ge=1, description="iterations between checkpoints")
    keep: int = Field(2, ge=1, description="checkpoints kept in checkpoints/")
    memory_budget: int = Field(
        2 * 2**30, ge=1, description="bytes of a split's latents held in memory before streaming"
    )
    buffer_chunks: int = Field(8, ge=1, description="store chunks buffered when streaming")
    stats_videos: int = Field(
        512, ge=1, description="train videos read to measure the normalisation statistics"
    )

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(**self.model_dump(include=set(GeneratorConfig.model_fields)))


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
    meta = {
        "kind": KIND,
        "config": cfg.model_dump(mode="json"),
        "fields": [spec.to_json() for spec in store.fields.values()],
        "encoder_hash": store.encoder_hash,
        "store_path": str(store.path),
        "source_fingerprint": (store.attrs.get("source") or {}).get("fingerprint"),
        "normalisation": stats,
    }
    return model, meta


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


def train_iteration(model: AVLAE, optimizers: dict, amp: Amp, window: dict) -> torch.Tensor:
    """Algorithm 1's steps I, II, III on one batch of real windows; (loss_d, loss_g, loss_rec)."""
    real = model.from_store(window)  # static (B, Ds), pose (B, T, Dp)
    b, t = real[1].shape[:2]
    loss_d = discriminator_step(model, real, optimizers["disc"], amp)
    loss_g = generator_step(model, b, t, optimizers["gen"], amp)
    loss_rec = reconstruction_step(model, b, t, optimizers, amp)
    amp.update()
    return torch.stack([loss_d, loss_g, loss_rec]).float()


def train_generator(
    store: LatentStore, cfg: TrainGeneratorConfig, out: str | Path, resume: bool = False
) -> Path:
    """Train AVLAE on the train split of `store`; checkpoints and metrics.jsonl in `out`."""
    out = Path(out)
    # Setup: device, precision, seed, model (with statistics), optimisers, data, evaluation.
    device = resolve_device(cfg.device)
    amp = Amp(device, cfg.amp)
    seed_everything(cfg.seed)
    model, meta = build_run(store, cfg)
    model.to(device).train()
    optimizers = model.make_optimizers(cfg.lr)  # {"disc": E_A, E_M, D_I, D_V; "gen": F_A, F_M, G}
    sampler = WindowSampler(
        store, window=cfg.frames, batch_size=cfg.batch_size, split="train",
        fields=list(model.fields), memory_budget=cfg.memory_budget,
        buffer_chunks=cfg.buffer_chunks, seed=cfg.seed,
    )  # fmt: skip
    step = start_run(out, resume, model, optimizers, amp, sampler, meta, RESUME)
    write_resolved(cfg, out)
    fd = LatentFD(store, model, cfg, device) if cfg.eval_every else None
    saved = step if resume else -1

    def checkpoint() -> None:
        train_state = {"sampler": sampler.state_dict(), "rng": rng_state(), "amp": amp.state_dict()}
        save_checkpoint(out, step, {"model": model}, optimizers, meta, cfg.keep, train_state)

    # Train: sample real windows, steps I-III; log (the only host sync), evaluate, checkpoint.
    sums, count, notes = torch.zeros(3, device=device), 0, {"train": "", "fd": ""}
    with (
        open(out / METRICS, "a") as log,
        progress_bar("train-generator", cfg.steps, "steps") as bar,
    ):
        if fd and step == 0:  # the untrained generator: where the latent_fd curve starts
            log.write(json.dumps({"step": 0, "latent_fd": fd(model)}) + "\n")
        bar.advance(step)
        while step < cfg.steps:
            sums += train_iteration(model, optimizers, amp, to_device(sampler.sample(), device))
            step, count = step + 1, count + 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                loss_d, loss_g, loss_rec = (sums / count).tolist()
                row = {"step": step, "loss_d": loss_d, "loss_g": loss_g, "loss_rec": loss_rec}
                log.write(json.dumps(row) + "\n")
                sums, count = torch.zeros_like(sums), 0
                notes["train"] = f"D {loss_d:.3g}  G {loss_g:.3g}  rec {loss_rec:.3g}"
            if fd and (step % cfg.eval_every == 0 or step == cfg.steps):
                value = fd(model)
                log.write(json.dumps({"step": step, "latent_fd": value}) + "\n")
                notes["fd"] = f"latent FD {value:.4g}"
            log.flush()
            bar.note("  ".join(notes.values()))
            if step % cfg.checkpoint_every == 0:
                checkpoint()
                saved = step
            bar.advance()
    if saved != step:
        checkpoint()
    return out


def load_generator(
    gen_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[AVLAE, dict[str, Any]]:
    """The AVLAE of a train-generator run folder's latest checkpoint, on `device`, in eval mode,
    and the checkpoint's meta (kind, config, fields, encoder_hash, normalisation)."""
    ckpt = load_checkpoint(gen_dir, optimizers=False)
    meta = ckpt.meta
    if meta.get("kind") != KIND:
        raise CheckpointError(
            f"{gen_dir} holds a {meta.get('kind', 'unknown')!r} checkpoint, not a generator; "
            "give the --out folder of vidlat train-generator"
        )
    config = {k: v for k, v in meta["config"].items() if k in GeneratorConfig.model_fields}
    specs = [FieldSpec.from_json(d) for d in meta["fields"]]
    model = AVLAE(specs, GeneratorConfig.model_validate(config))
    model.load_state_dict(ckpt.module_state("model"))
    return model.to(device).eval(), meta


@torch.no_grad()
def sample_sequences(
    generator: AVLAE, n: int, frames: int | None = None, fix: str | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """`n` latent sequences {field: float32 (n, T, *shape)} in store units, content and mask
    fields repeated over the T frames (default: the trained T; any T >= 2 works).

    fix=None: z_A and z_M drawn per sequence. "appearance": one z_A for all (identical static
    fields and first pose), z_M per sequence. "motion": one z_M for all (identical pose steps
    pose_t - pose_t-1, up to float rounding), z_A per sequence. `seed` makes it repeatable.
    """
    if fix is not None and fix not in FIXES:
        raise ConfigError(f"fix {fix!r} is not one of {', '.join(FIXES)} (or none)")
    frames = frames or generator.cfg.frames
    if frames < 2 or n < 1:
        raise ConfigError(f"need n >= 1 sequences of >= 2 frames; got n={n}, frames={frames}")
    noise = torch.Generator(device=generator.step_scale.device).manual_seed(seed)
    z_a, z_m = generator.noise(n, noise)
    z_a = z_a[:1] if fix == "appearance" else z_a  # (1, Z): G broadcasts one code to all
    z_m = z_m[:1] if fix == "motion" else z_m
    return generator.to_store(*generator.generate(z_a, z_m, frames))
