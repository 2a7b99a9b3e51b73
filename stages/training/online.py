"""Stage 2's baseline data path: pixel windows re-encoded by the frozen stage-1 encoder every step.

This is how DRNET's reference trains its LSTM (drnet-py's train_lstm.py runs the encoders on every
frame of every batch). vidlat keeps it only as the baseline that `vidlat bench` (and
`train-predictor --source online`) measures the latent store against: it costs one encoder forward
per frame per step where the store path costs none, and holds pixels and conv activations where the
store path holds a few numbers per frame.

Two pieces, shaped like the store path's so that train_predictor only has to choose between them:
- OnlineLatents stands in for a LatentStore (fields, split, n_frames, encoder_hash, attrs, read),
  so build_run and latent_stats work on it unchanged;
- OnlineWindowSampler stands in for a WindowSampler (same arguments, sample, state_dict), but
  yields {field: float32 (B, window, *shape)} as tensors already on the encoder's device.
The stage-1 modules are imported inside OnlineLatents only: importing this module imports none, so
the store path of train_predictor never loads a stage-1 model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vidlat.errors import DataError, StoreError
from vidlat.stages.common.checkpoint import weights_hash
from vidlat.stages.common.runtime import (
    frames_to_device,
    inference_layout,
    resolve_device,
)
from vidlat.store.format import LATENT_ROLES
from vidlat.store.videos import VideoPool, open_videos


class OnlineLatents:
    """A video dataset seen through a frozen stage-1 encoder, standing in for a LatentStore.

    Latents are computed when asked for, never kept: `read` encodes whole videos (for the
    normalisation statistics), `encode` any uint8 frames already gathered. The encoder is in eval
    mode (BatchNorm on running statistics) with gradients off, as the store's encoder is.
    """

    def __init__(
        self,
        data: str | Path,
        ae_dir: str | Path,
        device: str | torch.device = "auto",
        encode_batch: int = 256,
    ):
        from vidlat.stages.load import load_run  # lazy: see the module docstring
        from vidlat.stages.stage1.base import Stage1Model

        if encode_batch < 1:
            raise DataError(f"encode_batch must be >= 1; got {encode_batch}")
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.videos = open_videos(data)
        self.model, meta = load_run(ae_dir, "stage1", self.device)
        self.model.requires_grad_(False)
        self._check_frames()
        self.encode_batch = encode_batch
        # Whole-video fix-ups (slot alignment) run on host arrays; skipped when a model has none.
        self._fixups = type(self.model).postprocess_latents is not Stage1Model.postprocess_latents
        self.fields = {spec.name: spec for spec in self.model.latent_fields()}
        self.path = Path(data)
        self.n_videos, self.n_frames = self.videos.n_videos, self.videos.n_frames
        self.encoder_hash = weights_hash(ae_dir)
        self.attrs: dict[str, Any] = {
            "encoder": {"hash": self.encoder_hash, "model": self.model.name,
                        "config": meta.get("config", {}), "path": str(ae_dir)},
            "source": {"path": str(self.path), "fingerprint": self.videos.fingerprint},
            "split": {name: idx.tolist() for name, idx in self.videos.split.items()},
        }  # fmt: skip
        self._last: tuple[Any, dict[str, np.ndarray]] = (None, {})

    def _check_frames(self) -> None:
        model, v = self.model, self.videos
        if (v.height, v.width, v.channels) != (model.image_size, model.image_size, model.channels):
            raise DataError(
                f"{v.path} has {v.height}x{v.width}x{v.channels} frames but the encoder takes "
                f"{model.image_size}x{model.image_size}x{model.channels}; give the dataset it was "
                "trained on"
            )

    def to(self, device: torch.device) -> OnlineLatents:
        """Move the encoder, and so the batches it yields, to `device` (a torchrun rank's GPU)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    @property
    def split(self) -> dict[str, np.ndarray]:
        """Split name -> video indices, int64 (n,)."""
        return self.videos.split

    @torch.no_grad()
    def encode(self, frames: Tensor) -> dict[str, Tensor]:
        """uint8 frames (..., H, W, C) on any device -> {field: float32 (..., *shape)} on the
        encoder's device, `encode_batch` frames per forward pass."""
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:]).to(self.device, non_blocking=True)
        parts: dict[str, list[Tensor]] = {}
        for i in range(0, len(flat), self.encode_batch):
            x = frames_to_device(  # (b, C, H, W), the layout encode uses
                flat[i : i + self.encode_batch], self.device, inference_layout(self.device)
            )
            for name, z in self.model.encode(x).items():
                parts.setdefault(name, []).append(z.float())  # (b, *shape)
        out = {name: torch.cat(p).reshape(*lead, *p[0].shape[1:]) for name, p in parts.items()}
        return self._postprocess(out) if self._fixups and len(lead) == 2 else out

    def _postprocess(self, latents: dict[str, Tensor]) -> dict[str, Tensor]:
        # Windows are treated as short videos: slots are aligned from a window's first frame, not
        # its video's, which relabels slots but is consistent along the window.
        fixed = self.model.postprocess_latents({n: z.cpu().numpy() for n, z in latents.items()})
        return {n: torch.from_numpy(fixed[n]).to(self.device) for n in latents}

    def read(self, name: str, videos: slice | Sequence[int] | np.ndarray) -> np.ndarray:
        """Field `name` of whole videos, float32 (v, T, *shape), encoded now. The last videos'
        latents are kept, so reading every field of one set of videos encodes it once."""
        if name not in self.fields:
            raise StoreError(f"the encoder has no field {name!r}; it has {sorted(self.fields)}")
        key = repr(videos) if isinstance(videos, slice) else tuple(np.ravel(videos).tolist())
        if self._last[0] != key:
            latents = self.encode(torch.from_numpy(self.videos.read(videos)))
            self._last = (key, {n: z.cpu().numpy() for n, z in latents.items()})
        return self._last[1][name]


class OnlineWindowSampler:
    """Batches {field: float32 tensor (B, window, *shape)} on the encoder's device, re-encoded from
    uint8 pixel windows at every call (DRNET's reference data path).

    Takes WindowSampler's arguments. The split's videos stay in host memory when they fit
    `memory_budget` bytes; otherwise `buffer_chunks` random dataset chunks are held and replaced
    every `refresh_every` batches (a VideoPool). On CUDA the pixel windows are gathered into pinned
    memory and copied asynchronously: nothing here waits for the device.
    """

    def __init__(
        self,
        source: OnlineLatents,
        *,
        window: int,
        batch_size: int,
        split: str = "train",
        fields: Sequence[str] | None = None,
        memory_budget: int = 2 * 2**30,
        buffer_chunks: int = 8,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        refresh_every: int = 200,
    ):
        self.source, self.window, self.batch_size = source, window, batch_size
        self.videos = source.videos
        if not 1 <= window <= self.videos.n_frames or batch_size < 1 or buffer_chunks < 1:
            raise StoreError(
                f"need 1 <= window <= {self.videos.n_frames} frames, batch_size >= 1 and "
                f"buffer_chunks >= 1; got {window}, {batch_size}, {buffer_chunks}"
            )
        latent = [name for name, spec in source.fields.items() if spec.role in LATENT_ROLES]
        self.fields = list(fields or latent)
        if unknown := sorted(set(self.fields) - set(source.fields)):
            raise StoreError(f"the encoder has no fields {unknown}; it has {sorted(source.fields)}")
        self.pool = VideoPool(
            self.videos,
            split,
            memory_budget=memory_budget,
            buffer_chunks=buffer_chunks,
            refresh_every=refresh_every,
            rank=rank,
            world_size=world_size,
        )
        if not self.pool.ids.size:
            raise StoreError(f"{self.videos.path} has no videos in split {split!r}")
        self.in_memory = self.pool.in_memory
        self.rng = np.random.default_rng([seed, rank])
        self.pin = source.device.type == "cuda"

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        """Draw the next batch's windows: (videos (B,) dataset indices, starts (B,) frames)."""
        self.pool.refresh(self.rng)
        rows = self.rng.integers(0, len(self.pool.held_ids), self.batch_size)
        starts = self.rng.integers(0, self.videos.n_frames - self.window + 1, self.batch_size)
        return self.pool.held_ids[rows], starts

    def pixels(self, videos: np.ndarray, starts: np.ndarray) -> Tensor:
        """uint8 windows (B, window, H, W, C) on the host (pinned on CUDA) of held videos."""
        held = self.pool.held_ids  # sorted
        rows = np.searchsorted(held, videos).clip(max=len(held) - 1)
        if not np.array_equal(held[rows], videos):
            raise StoreError(f"videos {sorted(set(videos) - set(held))} are not held")
        flat = self.pool.frames.reshape(-1, *self.pool.frames.shape[2:])  # (n*T, H, W, C): a view
        frames = (rows * self.videos.n_frames + starts)[:, None] + np.arange(self.window)
        out = torch.empty((*frames.shape, *flat.shape[1:]), dtype=torch.uint8,
                          pin_memory=self.pin)  # fmt: skip
        np.take(flat, frames, axis=0, out=out.numpy())
        return out

    def sample(self) -> dict[str, Tensor]:
        """One batch: {field: float32 (batch_size, window, *shape)} on the encoder's device."""
        latents = self.source.encode(self.pixels(*self.index()))
        return {name: latents[name] for name in self.fields}

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position: RNG state, batches drawn, chunks held."""
        return self.pool.state_dict(self.rng)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state_dict()` was taken (same dataset, split and arguments)."""
        self.pool.load_state_dict(state, self.rng)
