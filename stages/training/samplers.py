"""Samplers of training batches that the store's WindowSampler does not cover: stage 1's frame
pairs. (Stage 2 reads windows through vidlat.store.sampler; the online baseline's sampler is in
training/online.py beside the encoder it drives.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from vidlat.errors import DataError
from vidlat.store.videos import VideoArray, VideoPool

if TYPE_CHECKING:
    from vidlat.stages.training.train_ae import TrainAEConfig


class FramePairSampler:
    """Batches {x_t, x_tk: uint8 (B, H, W, C), video: int64 (B,)} of one split's videos.

    k ~ U[min(min_k, K'), K'] with K' = min(K, T-1), t ~ U[0, T-1-k]. Rows are distinct videos
    when the cache holds >= B. With `neighbour` the batch also holds x_t1, the frame next to x^t
    (t+1, or t-1 where t is the last frame), for a temporal smoothness term on the pose; it draws
    nothing from the RNG, so the pairs are the same with and without it.
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
        neighbour: bool = False,
    ):
        self.videos, self.batch_size, self.neighbour = videos, cfg.batch_size, neighbour
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
        batch = {"x_t": frames[rows, t], "x_tk": frames[rows, t + k], "video": ids[rows]}
        if self.neighbour:  # t+1 exists unless k = 0 and t = T-1
            batch["x_t1"] = frames[rows, np.where(t + 1 < self.videos.n_frames, t + 1, t - 1)]
        return batch

    def state_dict(self) -> dict[str, Any]:
        return self.pool.state_dict(self.rng)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool.load_state_dict(state, self.rng)
