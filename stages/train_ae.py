"""`vidlat train-ae`: stage 1, one visible loop training a frame autoencoder on pairs of frames.

Each step draws frame pairs (x^t, x^{t+k}), k uniform in [min_k, K] (default [1, K]: k = 0 would
teach a decoder with skips to copy its content frame), of distinct videos of the train
split, from a cache in memory: the whole split when it fits `memory_budget`, otherwise a few random
chunks of whole videos, replaced every `refresh_every` steps. Pairs of different batch rows serve as
the "different video" pose pairs of the discriminator/critic. Resuming restores weights, optimiser
moments, the sampler's RNG and cache, and torch's RNG, so a resumed run equals an uninterrupted one.
Under torchrun each rank draws its own pairs (its own RNG stream and, when streaming, its own
chunks) and rank 0 alone writes; see vidlat.stages.distributed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from vidlat.config import Config, write_resolved
from vidlat.errors import DataError
from vidlat.progress import progress_bar
from vidlat.stages import distributed
from vidlat.stages.checkpoint import save_checkpoint
from vidlat.stages.images import save_grid
from vidlat.stages.runs import ResumeRule
from vidlat.stages.runtime import frames_to_device, rng_state, seed_everything
from vidlat.stages.stage1 import KIND, STAGE1_MODELS, Stage1Model, build_stage1
from vidlat.store.videos import VideoArray, VideoPool

SAMPLES = "samples"
# Settings that may change when resuming: they steer training but not what the weights mean.
RESUME = ResumeRule(
    meta_keys=("model", "image_size", "channels", "dataset_fingerprint"),
    free_config=frozenset({"lr", "betas", "alpha", "beta"}),
    hint="Resume with the same model, settings and --data",
)


class TrainAEConfig(Config):
    """Stage-1 training: which model, how long, how; the model's own settings in model_params."""

    model: str = Field("drnet", description="stage-1 model, a key of STAGE1_MODELS (drnet, mipae)")
    model_params: dict[str, Any] = Field(
        default_factory=dict,
        description="the model's settings, e.g. {pose_dim: 10, width: 64}; see DrnetConfig",
    )
    steps: int = Field(5000, ge=0, description="steps (each updates every optimiser once)")
    batch_size: int = Field(64, ge=1, description="frame pairs per step")
    lr: float | None = Field(None, gt=0, description="learning rate (default: the model's, 0.002)")
    max_k: int = Field(8, ge=0, description="K: largest frame offset of a pair (x^t, x^{t+k})")
    min_k: int = Field(
        1,
        ge=0,
        description="smallest frame offset of a pair (0 lets x^t+k = x^t, which teaches a "
        "decoder with skips to copy its content frame)",
    )
    seed: int = Field(0, description="seeds the weights and the pair sampler")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA if present")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="mixed precision (fp16: CUDA)")
    log_every: int = Field(50, ge=1, description="steps between metrics.jsonl lines")
    sample_every: int = Field(
        500, ge=0, description="steps between reconstruction grids in samples/ (0: never)"
    )
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints (and at end)")
    keep: int = Field(2, ge=1, description="checkpoints kept in checkpoints/")
    memory_budget: int = Field(
        2**30, ge=1, description="bytes of uint8 train videos held in memory at once"
    )
    refresh_every: int = Field(
        200, ge=1, description="steps between cache refills when the train split exceeds the budget"
    )

    @field_validator("model")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in STAGE1_MODELS:
            raise ValueError(f"unknown model; choose one of {', '.join(sorted(STAGE1_MODELS))}")
        return name


class FramePairSampler:
    """Batches {x_t, x_tk: uint8 (B, H, W, C), video: int64 (B,)} of one split's videos.

    k ~ U[min(min_k, K'), K'] with K' = min(K, T-1), t ~ U[0, T-1-k]. Rows are distinct videos
    when the cache holds >= B.
    Rank r of world_size draws from its own RNG stream and, when streaming, from every
    world_size-th chunk (all chunks if that leaves it none): see VideoPool, which holds the videos.
    """

    def __init__(
        self,
        videos: VideoArray,
        cfg: TrainAEConfig,
        split: str = "train",
        rank: int = 0,
        world_size: int = 1,
    ):
        self.videos, self.batch_size = videos, cfg.batch_size
        chunk_bytes = int(videos.array.chunks[0]) * int(np.prod(videos.shape[1:]))
        pool = self.pool = VideoPool(
            videos,
            split,
            memory_budget=cfg.memory_budget,
            # at least two chunks, so that a batch holds pairs of different videos for the critic
            buffer_chunks=max(2, cfg.memory_budget // chunk_bytes),
            refresh_every=cfg.refresh_every,
            rank=rank,
            world_size=world_size,
        )
        self.indices, self.chunks, self.in_memory = pool.ids, pool.chunks, pool.in_memory
        if len(self.indices) == 0:
            raise DataError(f"{videos.path} has no {split} videos; re-create it with a split")
        self.max_k = min(cfg.max_k, videos.n_frames - 1)
        self.min_k = min(cfg.min_k, self.max_k)
        self.rng = np.random.default_rng([cfg.seed, rank])  # rank 0: the same as seed alone

    @property
    def cache_ids(self) -> np.ndarray:
        """Dataset indices of the videos held now."""
        return self.pool.held_ids

    def sample(self) -> dict[str, np.ndarray]:
        self.pool.refresh(self.rng)
        ids, frames = self.pool.held_ids, self.pool.frames  # (n,), (n, T, H, W, C)
        n, b = len(ids), self.batch_size
        rows = self.rng.choice(n, size=b, replace=n < b)
        k = self.rng.integers(self.min_k, self.max_k + 1, size=b)
        t = self.rng.integers(0, self.videos.n_frames - k)
        return {"x_t": frames[rows, t], "x_tk": frames[rows, t + k], "video": ids[rows]}

    def state_dict(self) -> dict[str, Any]:
        return self.pool.state_dict(self.rng)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool.load_state_dict(state, self.rng)


def run_meta(model: Stage1Model, videos: VideoArray) -> dict[str, Any]:
    """What a stage-1 checkpoint says about itself (load_stage1 rebuilds the model from it)."""
    return {
        "kind": KIND,
        "model": model.name,
        "config": model.config_dict(),
        "image_size": model.image_size,
        "channels": model.channels,
        "latent_fields": [f.to_json() for f in model.latent_fields()],
        "dataset_fingerprint": videos.fingerprint,
        "dataset_path": str(videos.path),
    }


def fixed_frames(videos: VideoArray, max_k: int, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Frames 0 and min(K, T-1) of up to n val videos (train if no val): uint8 (n, H, W, C) each."""
    ids = videos.split.get("val", np.zeros(0, np.int64))
    ids = ids if len(ids) else videos.split["train"]
    clip = videos.read(ids[:n])
    return clip[:, 0], clip[:, min(max_k, videos.n_frames - 1)]


@torch.no_grad()
def save_samples(model: Stage1Model, frames: tuple, device: torch.device, path: Path) -> None:
    """Grid rows: x^t, x^{t+k}, D(content of x^t, pose of x^{t+k}), and the same with the content
    of the previous row's video (a content/pose swap). Models with skips read them from the content
    frame (x^t, rolled for the swap). Eval mode; training state is untouched."""
    was_training = model.training
    model.eval()
    x_t, x_tk = (frames_to_device(f, device) for f in frames)
    z_t, z_tk = model.encode(x_t), model.encode(x_tk)
    roles = {f.name: f.role for f in model.latent_fields()}
    rec = model.decode({n: (z_t if roles[n] == "content" else z_tk)[n] for n in z_t}, context=x_t)
    swap = model.decode(
        {n: z_t[n].roll(1, 0) if roles[n] == "content" else z_tk[n] for n in z_t},
        context=x_t.roll(1, 0),
    )
    model.train(was_training)
    rows = [x.permute(0, 2, 3, 1) for x in (x_t, x_tk, rec, swap)]
    save_grid(path, rows, labels=["x^t", "x^t+k", "recon", "swap content"])


def square_size(videos: VideoArray) -> int:
    if videos.height != videos.width:
        raise DataError(
            f"{videos.path} has {videos.height}x{videos.width} frames; stage-1 nets need square "
            "frames: re-import the videos with --size"
        )
    return videos.height


def train_ae(videos: VideoArray, cfg: TrainAEConfig, out: str | Path, resume: bool = False) -> Path:
    """Train stage 1 on the train split of `videos`; checkpoints, metrics, samples go into `out`.

    Under torchrun every rank calls this; only rank 0 writes into `out`."""
    out = Path(out)
    # Setup: ranks and device, seed, model, precision, optimisers, data.
    ranks = distributed.setup(cfg.device)  # a world of one without torchrun
    device = ranks.device
    seed_everything(cfg.seed)
    model = build_stage1(cfg.model, cfg.model_params, square_size(videos), videos.channels)
    model.to(device).train()
    amp = ranks.amp(cfg.amp, model)  # averages gradients over ranks after each backward
    optimizers = model.make_optimizers(cfg.lr)
    sampler = FramePairSampler(videos, cfg, rank=ranks.rank, world_size=ranks.world_size)
    meta = {**run_meta(model, videos), "world_size": ranks.world_size}
    state = distributed.RankState(sampler, model, ranks, cfg.seed)
    step = distributed.start_run(ranks, out, resume, model, optimizers, amp, state, meta, RESUME)
    if ranks.is_main:
        write_resolved(cfg, out)
    grid_frames = fixed_frames(videos, cfg.max_k)
    saved = step if resume else -1

    def checkpoint() -> None:  # every rank: state.state_dict() gathers from all of them
        train_state = {"sampler": state.state_dict(), "rng": rng_state(), "amp": amp.state_dict()}
        if ranks.is_main:
            save_checkpoint(out, step, {"model": model}, optimizers, meta, cfg.keep, train_state)

    # Train: sample, step, log (the only host sync), picture, checkpoint.
    sums: dict[str, torch.Tensor] = {}
    count = 0
    bar_cm = progress_bar("train-ae", cfg.steps, "steps")
    with distributed.open_log(out, ranks) as log, bar_cm as bar:
        bar.advance(step)
        while step < cfg.steps:
            batch = sampler.sample()
            inputs = {k: frames_to_device(batch[k], device) for k in ("x_t", "x_tk")}
            inputs["video"] = torch.from_numpy(batch["video"]).to(device)
            model.progress = step / max(cfg.steps, 1)  # e/E, for schedules such as the paper's α
            losses = model.train_step(inputs, optimizers, amp)
            step, count = step + 1, count + 1
            sums = {k: sums.get(k, 0) + v for k, v in losses.items()}
            if step % cfg.log_every == 0 or step == cfg.steps:
                values = (ranks.mean(torch.stack(list(sums.values()))) / count).tolist()
                means = dict(zip(sums, values, strict=True))
                log.write(json.dumps({"step": step, **means}) + "\n")
                log.flush()
                bar.note("  ".join(f"{k} {v:.4g}" for k, v in means.items()))
                sums, count = {}, 0
            if ranks.is_main and cfg.sample_every and step % cfg.sample_every == 0:
                save_samples(model, grid_frames, device, out / SAMPLES / f"step_{step:06d}.png")
            if step % cfg.checkpoint_every == 0:
                checkpoint()
                saved = step
            bar.advance()
    if saved != step:
        checkpoint()
    ranks.barrier()  # no rank leaves (closing its connections) while rank 0 still writes
    return out
