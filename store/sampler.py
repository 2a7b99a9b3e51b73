"""Stage 2's data: windows of consecutive frames of one video of a split, straight from the store.

A window never crosses a video boundary nor leaves its split. Two modes, picked by size:
- in memory: the split's selected fields fit in `memory_budget`, so they are read once and every
  batch is one numpy gather at uniformly random (video, start) pairs;
- streaming: chunks holding split videos are visited in a random order each epoch, `buffer_chunks`
  of them held at once; each buffered video hands out `windows_per_video` windows (drawn at random
  across the whole buffer) before its chunk's slot is refilled with the next chunk, so memory stays
  O(buffer_chunks) chunks and every split video is used in every epoch.
The hot path is numpy fancy indexing on arrays in memory; zarr is read only when a slot fills.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidlat.errors import StoreError
from vidlat.store.format import LATENT_ROLES
from vidlat.store.reader import LatentStore

# Bytes read per zarr call while loading a split into memory: large enough for zarr to fetch chunks
# concurrently, small enough that videos outside the split cost little transient memory.
_LOAD_BLOCK_BYTES = 64 * 2**20


@dataclass
class _Slot:
    """Videos in memory: per-frame fields flattened to (n*T, *shape), per-video ones (n, *shape).

    left: windows each video may still hand out (n,), int64; unused in memory mode.
    chunk: the store chunk it holds when streaming (-1 for the in-memory pool).
    """

    data: dict[str, np.ndarray]
    n: int
    left: np.ndarray
    chunk: int = -1


class WindowSampler:
    """Batches {field: float32 (B, window, *shape)} of windows from one split of a latent store.

    Per-video fields (per_frame=False) are repeated over the window axis. With several ranks
    (torchrun), each rank has its own random stream and, when streaming, its own chunks.
    """

    def __init__(
        self,
        store: LatentStore,
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
        windows_per_video: int | None = None,
    ):
        self.store, self.window, self.batch_size = store, window, batch_size
        self.n_frames = store.n_frames
        self._check_args(window, batch_size, buffer_chunks, rank, world_size)
        self.fields = self._pick_fields(fields)
        self.videos = self._split_videos(split)  # sorted global indices (S,)
        # SeedSequence([seed, rank]): distinct streams for every (seed, rank), unlike seed + rank.
        self.rng = np.random.default_rng([seed, rank])
        # Default: as many windows per video as fit in it side by side (each frame ~once an epoch).
        self.windows_per_video = windows_per_video or max(1, self.n_frames // window)
        if self.windows_per_video < 1:
            raise StoreError(f"windows_per_video must be >= 1; got {windows_per_video}")
        self.nbytes = len(self.videos) * self._bytes_per_video()
        self.in_memory = self.nbytes <= memory_budget
        chunks = np.unique(self.videos // store.videos_per_chunk)
        self._check_written(chunks)
        if self.in_memory:
            self._pool = self._load(chunks)
            return
        # Rank r takes every world_size-th chunk of the split; a rank left with none takes them all.
        own = chunks[rank::world_size]
        self.chunks = own if own.size else chunks
        self._order, self._cursor = np.empty(0, dtype=np.int64), 0
        self._slots: list[_Slot | None] = [None] * min(buffer_chunks, len(self.chunks))
        self.epoch = -1  # becomes 0 when the first chunk order is drawn

    # -- setup -------------------------------------------------------------------------------------

    def _check_args(self, window: int, batch_size: int, buffer_chunks: int, rank: int, world: int):
        if window < 1 or batch_size < 1 or buffer_chunks < 1:
            raise StoreError(
                f"window, batch_size and buffer_chunks must be >= 1; got {window}, {batch_size}, "
                f"{buffer_chunks}"
            )
        if window > self.n_frames:
            raise StoreError(
                f"a window of {window} frames does not fit in the store's videos of "
                f"{self.n_frames} frames ({self.store.path}); use past + future <= {self.n_frames}"
            )
        if not 0 <= rank < world:
            raise StoreError(f"rank {rank} is not in 0..{world - 1} (world_size {world})")

    def _pick_fields(self, fields: Sequence[str] | None) -> list[str]:
        if fields is None:
            fields = [n for n, s in self.store.fields.items() if s.role in LATENT_ROLES]
        fields = list(fields)
        if unknown := [n for n in fields if n not in self.store.fields]:
            raise StoreError(
                f"{self.store.path} has no field {unknown}; it has {sorted(self.store.fields)}"
            )
        if not fields:
            raise StoreError(
                f"{self.store.path} has no latent fields to sample; name them with fields="
            )
        return fields

    def _split_videos(self, split: str) -> np.ndarray:
        splits = self.store.split
        if split not in splits:
            raise StoreError(
                f"{self.store.path} has no split {split!r}; its splits are {sorted(splits)}"
            )
        videos = np.unique(splits[split])
        if not videos.size:
            raise StoreError(f"split {split!r} of {self.store.path} is empty; choose another split")
        return videos

    def _check_written(self, chunks: np.ndarray) -> None:
        if missing := [int(c) for c in chunks if not self.store.written[c]]:
            raise StoreError(
                f"{self.store.path} lacks chunks {missing[:10]} of this split; re-run vidlat "
                "encode with the same arguments to finish it"
            )

    def _bytes_per_video(self) -> int:
        total = 0
        for name in self.fields:
            arr = self.store.array(name)
            total += arr.dtype.itemsize * math.prod(arr.shape[1:])
        return total

    # -- loading -----------------------------------------------------------------------------------

    def _load(self, chunks: np.ndarray) -> _Slot:
        """Read the split's videos of `chunks` (ascending) into one slot, a block per zarr call."""
        per_chunk = max(1, self._bytes_per_video() * self.store.videos_per_chunk)
        block = max(1, _LOAD_BLOCK_BYTES // per_chunk)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.fields}
        for key in np.unique(chunks // block):
            group = chunks[chunks // block == key]
            start = self.store.chunk_range(int(group[0]))[0]
            stop = self.store.chunk_range(int(group[-1]))[1]
            rows = self.videos[(self.videos >= start) & (self.videos < stop)] - start
            for name in self.fields:
                parts[name].append(self.store.read(name, slice(start, stop))[rows])  # checked
        data = {name: np.concatenate(p) for name, p in parts.items()}
        n = len(next(iter(data.values())))
        flat = {name: self._flatten(name, a) for name, a in data.items()}
        return _Slot(flat, n, np.full(n, self.windows_per_video, dtype=np.int64))

    def _flatten(self, name: str, a: np.ndarray) -> np.ndarray:
        # (n, T, *shape) -> (n*T, *shape): one integer per frame makes the gather a single take.
        return a.reshape(-1, *a.shape[2:]) if self.store.fields[name].per_frame else a

    def _next_chunk(self) -> int:
        if self._cursor == len(self._order):
            self._order, self._cursor = self.rng.permutation(self.chunks), 0
            self.epoch += 1
        self._cursor += 1
        return int(self._order[self._cursor - 1])

    def _refill(self) -> None:
        for j, slot in enumerate(self._slots):
            if slot is None:
                chunk = self._next_chunk()
                slot = self._load(np.array([chunk]))
                slot.chunk, self._slots[j] = chunk, slot

    # -- resume ------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """JSON-able position of the sampler: RNG state and, when streaming, order and buffer."""
        state: dict[str, Any] = {"rng": self.rng.bit_generator.state}
        if not self.in_memory:
            state["order"] = self._order.tolist()
            state["cursor"], state["epoch"] = self._cursor, self.epoch
            state["slots"] = [
                None if s is None else [s.chunk, s.left.tolist()] for s in self._slots
            ]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state_dict()` was taken (same store, split and arguments)."""
        if ("slots" in state) == self.in_memory:
            raise StoreError(
                "sampler state was taken in the other mode (in memory vs streaming); resume with "
                "the same memory_budget"
            )
        self.rng.bit_generator.state = state["rng"]
        if self.in_memory:
            return
        self._order = np.asarray(state["order"], dtype=np.int64)
        self._cursor, self.epoch = int(state["cursor"]), int(state["epoch"])
        if len(state["slots"]) != len(self._slots):
            raise StoreError(
                "sampler state has another buffer size; resume with the same buffer_chunks"
            )
        for j, saved in enumerate(state["slots"]):
            self._slots[j] = None
            if saved is not None:
                slot = self._load(np.array([saved[0]]))
                slot.chunk, slot.left = saved[0], np.asarray(saved[1], dtype=np.int64)
                self._slots[j] = slot

    # -- sampling ----------------------------------------------------------------------------------

    def sample(self) -> dict[str, np.ndarray]:
        """One batch: {field: float32 (batch_size, window, *shape)}."""
        b, w = self.batch_size, self.window
        out = {
            n: np.empty((b, w, *self.store.fields[n].shape), dtype=np.float32) for n in self.fields
        }
        if self.in_memory:
            videos = self.rng.integers(0, self._pool.n, b)
            self._gather(self._pool, videos, self._starts(b), out, slice(None))
            return out
        filled = 0
        while filled < b:
            self._refill()
            slots, videos = self._draw(b - filled)
            starts = self._starts(len(videos))
            for j in np.unique(slots):
                hit = np.flatnonzero(slots == j)
                self._gather(self._slots[j], videos[hit], starts[hit], out, filled + hit)
            self._evict()
            filled += len(videos)
        return out

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while True:
            yield self.sample()

    def _starts(self, k: int) -> np.ndarray:
        return self.rng.integers(0, self.n_frames - self.window + 1, k)

    def _draw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Up to k (slot, local video) pairs, drawn without replacement from the buffer tickets."""
        left = np.concatenate([s.left for s in self._slots])
        owner = np.concatenate([np.full(s.n, j) for j, s in enumerate(self._slots)])
        local = np.concatenate([np.arange(s.n) for s in self._slots])
        ends = np.cumsum(left)
        tickets = self.rng.choice(ends[-1], size=min(k, int(ends[-1])), replace=False)
        which = np.searchsorted(ends, tickets, side="right")  # buffered video of each ticket
        for j, s in enumerate(self._slots):
            s.left -= np.bincount(local[which][owner[which] == j], minlength=s.n)
        return owner[which], local[which]

    def _evict(self) -> None:
        for j, s in enumerate(self._slots):
            if s is not None and not s.left.any():
                self._slots[j] = None

    def _gather(
        self,
        slot: _Slot,
        videos: np.ndarray,
        starts: np.ndarray,
        out: dict,
        pos: slice | np.ndarray,
    ) -> None:
        """Window i (video videos[i] of `slot`, from frame starts[i]) into out[name][pos[i]]."""
        frames = (videos * self.n_frames + starts)[:, None] + np.arange(self.window)  # (k, window)
        for name in self.fields:
            data = slot.data[name]
            if self.store.fields[name].per_frame:
                out[name][pos] = np.take(data, frames, axis=0)  # (k, window, *shape)
            else:
                out[name][pos] = np.take(data, videos, axis=0)[:, None]  # repeated over the window
