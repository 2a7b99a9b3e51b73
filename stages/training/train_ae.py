"""`vidlat train-ae`: stage 1, a frame autoencoder trained on pairs of frames by the one driver.

Each step draws frame pairs (x^t, x^{t+k}), k uniform in [min_k, K] (default [1, K]: k = 0 would
teach a decoder with skips to copy its content frame), of distinct videos of the train
split, from a cache in memory: the whole split when it fits `memory_budget`, otherwise a few random
chunks of whole videos, replaced every `refresh_every` steps. Pairs of different batch rows serve as
the "different video" pose pairs of the discriminator/critic. A model that needs_neighbour (DRNET
with `smoothness` > 0) also gets x_t1, the frame next to x^t, drawn without touching the RNG.
Resuming restores weights, optimiser moments, the sampler's RNG and cache, and torch's RNG, so a
resumed run equals an uninterrupted one.
Under torchrun each rank draws its own pairs (its own RNG stream and, when streaming, its own
chunks) and rank 0 alone writes; see vidlat.stages.common.distributed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidlat.errors import DataError
from vidlat.stages.common import distributed
from vidlat.stages.common.images import save_grid, save_layers, to_uint8, upscaled
from vidlat.stages.common.runs import ResumeRule
from vidlat.stages.common.runtime import frames_to_device
from vidlat.stages.inference.encode import encode_frames
from vidlat.stages.inference.rollout import decode_latents
from vidlat.stages.stage1 import build_stage1, resolve_model_config
from vidlat.stages.stage1.base import KIND, Stage1Model
from vidlat.stages.stage1.hierarchical.decomposition import decomposition_scores, scorable
from vidlat.stages.training.configs import TrainAEConfig
from vidlat.stages.training.loop import Job, StepContext, train
from vidlat.stages.training.samplers import FramePairSampler
from vidlat.store.videos import VideoArray

SAMPLES = "samples"
# Settings that may change when resuming: they steer training but not what the weights mean.
RESUME = ResumeRule(
    meta_keys=("model", "image_size", "channels", "dataset_fingerprint"),
    free_config=frozenset({"lr", "betas", "alpha", "beta", "smoothness", "tensorboard"}),
    hint="Resume with the same model, settings and --data",
)


def used_settings(cfg: TrainAEConfig) -> dict[str, Any]:
    """The fields train-ae fills in itself, as config.yaml records them: model_params with every
    setting of the model, its defaults included (lr stays as given: null means model_params.lr)."""
    params = resolve_model_config(cfg.model, cfg.model_params)
    return {"model_params": params.model_dump(mode="json")}


def run_meta(model: Stage1Model, videos: VideoArray) -> dict[str, Any]:
    """What a stage-1 checkpoint says about itself (load_run rebuilds the model from it)."""
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
def save_samples(model: Stage1Model, frames: tuple, device: torch.device, path: Path) -> Path:
    """Grid rows: x^t, x^{t+k}, D(content of x^t, pose of x^{t+k}), and the same with the content
    of the previous row's video (a content/pose swap). Models with skips read them from the content
    frame (x^t, rolled for the swap). Frames are upscaled as generate's pictures are (>= 128 px)
    and each row is labelled. A layered model also writes PATH_layers.png: the layers of the x^t
    frames (background, each slot's object, mask and glimpse), as generate's layers.png. Eval
    mode; training state is untouched."""
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
    if hasattr(model, "decompose"):
        layers = {k: v[None].float().cpu().numpy() for k, v in model.decompose(z_t).items()}
        save_layers(path.with_name(f"{path.stem}_layers.png"), layers, "x^t")
    model.train(was_training)
    rows = [upscaled(to_uint8(x.permute(0, 2, 3, 1))) for x in (x_t, x_tk, rec, swap)]
    return save_grid(path, rows, labels=["x^t", "x^t+k", "recon", "swap content"])


class Validation:
    """Same-frame reconstruction MSE on the frames of fixed val videos (train if no val), and for
    slot models on data with sprite factors the decomposition scores (hierarchical/
    decomposition.py), all in eval mode; training state is untouched."""

    def __init__(self, model: Stage1Model, videos: VideoArray, n: int, device: torch.device):
        ids = videos.split.get("val", np.zeros(0, np.int64))
        ids = np.asarray(ids if len(ids) else videos.split["train"])[:n]
        self.model, self.device, self.side = model, device, videos.height
        self.frames = videos.read(ids)  # (n, T, H, W, C) uint8
        self.objects = None
        if scorable(model, videos):
            self.objects = (videos.read_factor("position", ids), videos.read_factor("present", ids))

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        was_training = self.model.training
        self.model.eval()
        latents = encode_frames(self.model, self.frames, 256, self.device)  # (n, T, ...)
        # every frame decoded from its own latents (and, for a model with skips, itself)
        n, t = self.frames.shape[:2]
        flat = {k: v.reshape(n * t, 1, *v.shape[2:]) for k, v in latents.items()}
        context = self.frames.reshape(n * t, *self.frames.shape[2:])
        recon = decode_latents(self.model, flat, 256, context).reshape(self.frames.shape)
        self.model.train(was_training)
        err = ((recon.astype(np.float64) - self.frames) / 255.0) ** 2
        metrics = {"val_rec": float(err.mean())}
        if self.objects is not None:
            aligned = self.model.postprocess_latents(latents)
            scores = decomposition_scores(
                aligned["z_where"], aligned["presence"], *self.objects, side=self.side
            )
            metrics |= {f"val_{k}": v for k, v in scores.items()}
        return metrics


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

    def build(ranks: distributed.Ranks) -> Job:
        device = ranks.device
        model = build_stage1(cfg.model, cfg.model_params, square_size(videos), videos.channels)
        model.to(device).train()
        sampler = FramePairSampler(
            videos, cfg, rank=ranks.rank, world_size=ranks.world_size,
            neighbour=model.needs_neighbour,
        )  # fmt: skip
        grid_frames = fixed_frames(videos, cfg.max_k)

        def step(batch: dict[str, np.ndarray], ctx: StepContext) -> dict[str, torch.Tensor]:
            frames = ("x_t", "x_tk", "x_t1")  # x_t1 only for a model that needs_neighbour
            inputs = {k: frames_to_device(batch[k], device) for k in frames if k in batch}
            inputs["video"] = torch.from_numpy(batch["video"]).to(device)
            model.progress = ctx.progress  # e/E, for schedules such as the paper's α
            return model.train_step(inputs, ctx.optimizers, ctx.amp, ctx.run)

        def pictures(step: int) -> Path:
            return save_samples(model, grid_frames, device, out / SAMPLES / f"step_{step:06d}.png")

        validate = Validation(model, videos, cfg.val_videos, device) if cfg.val_every else None
        return Job(
            model, model.make_optimizers(cfg.lr), sampler, run_meta(model, videos), RESUME, step,
            validate=validate, val_every=cfg.val_every,
            pictures=pictures, picture_every=cfg.sample_every, used=used_settings(cfg),
        )  # fmt: skip

    return train("train-ae", cfg, out, resume, build)
