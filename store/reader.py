"""Open a latent store for reading: format and completeness checked on open, fields found by role.

Axis order: per-frame fields (V, T, *shape), per-video fields (V, *shape); a chunk is
`videos_per_chunk` whole videos. Reading the data back needs no vidlat: it is plain Zarr v3.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from vidlat.errors import StoreError
from vidlat.store import chunks
from vidlat.store.format import (
    LATENT_ROLES,
    WRITTEN,
    open_group_checked,
    parse_block,
    store_location,
)


class LatentStore:
    """A latent store opened read-only; `open` is the constructor to use."""

    def __init__(self, location: str | Path, group: zarr.Group):
        self.path = location
        self.group = group
        self.attrs, self.fields = parse_block(group, location)
        self.n_videos: int = self.attrs["n_videos"]
        self.n_frames: int = self.attrs["n_frames"]
        self.videos_per_chunk: int = self.attrs["videos_per_chunk"]
        self.dtype: str = self.attrs["dtype"]
        self.complete: bool = bool(self.attrs["complete"])
        self.n_chunks = -(-self.n_videos // self.videos_per_chunk)
        self.written: np.ndarray = np.asarray(group[WRITTEN][:], dtype=bool)  # (n_chunks,)
        self.arrays = {name: group[name] for name in self.fields}

    @classmethod
    def open(cls, path: str | Path, require_complete: bool = True) -> LatentStore:
        """Open the store at `path` (a folder, or an fsspec URL containing '://').

        StoreError if the path is missing, not a Zarr group, not a vidlat latent store, of an
        unknown format version, or (with `require_complete`) not completely written or missing
        a chunk file of a written chunk (listed once here; reads check decoding and values).
        """
        location = store_location(path)
        store = cls(location, open_group_checked(location, mode="r"))
        if require_complete and not store.complete:
            done = int(store.written.sum())
            raise StoreError(
                f"{location} was interrupted: {done} of {store.n_chunks} chunks written; "
                "re-run vidlat encode with the same arguments to finish it"
            )
        if require_complete:
            store.check_chunks()
        return store

    # -- damage ------------------------------------------------------------------------------------

    @property
    def repair(self) -> str:
        """What the user runs to repair damaged chunks: encode again, which re-encodes them."""
        enc = (self.attrs.get("encoder") or {}).get("path", "AE_RUN")
        src = (self.attrs.get("source") or {}).get("path", "VIDEOS")
        return (
            f"re-run `vidlat encode --data {src} --ae {enc} --out {self.path}`, which re-encodes "
            "damaged chunks"
        )

    def held_arrays(self) -> dict[str, zarr.Array]:
        """Arrays whose every written chunk must have its files: latent fields always; aux ones
        in stores written with every chunk stored (older ones skip all-fill aux chunks)."""
        every = bool(self.attrs.get(chunks.EVERY_CHUNK_STORED))
        return {
            n: a for n, a in self.arrays.items() if every or self.fields[n].role in LATENT_ROLES
        }

    def damaged_chunks(self, decode: bool = True) -> list[chunks.Damage]:
        """Written chunks with a missing file, or (with `decode`) one that does not decode or holds
        NaN/inf in a latent field; chunks marked unwritten in a complete store count too."""
        written = [int(i) for i in np.flatnonzero(self.written)]
        finite = [n for n, s in self.fields.items() if s.role in LATENT_ROLES]
        damage = chunks.scan(self.held_arrays(), written, finite=finite, decode=decode)
        if self.complete:
            lost = np.flatnonzero(~self.written)
            damage += [chunks.Damage(WRITTEN, int(i), "marked unwritten") for i in lost]
        return damage

    def check_chunks(self) -> None:
        """StoreError naming the first damaged chunks when a chunk file of a written chunk is
        missing (one listing per array, no decoding)."""
        if damage := self.damaged_chunks(decode=False):
            raise StoreError(f"{self.path} is damaged: {chunks.summary(damage)}; {self.repair}")

    @property
    def encoder_hash(self) -> str | None:
        """SHA-256 of the encoder weights that wrote the store (None if not recorded)."""
        return (self.attrs.get("encoder") or {}).get("hash")

    @property
    def split(self) -> dict[str, np.ndarray]:
        """Split name -> video indices, int64 (n,)."""
        return {
            k: np.asarray(v, dtype=np.int64) for k, v in (self.attrs.get("split") or {}).items()
        }

    def fields_with_role(self, role: str) -> list[str]:
        """Names of the fields of `role`, in store order."""
        return [name for name, spec in self.fields.items() if spec.role == role]

    def chunk_range(self, i: int) -> tuple[int, int]:
        """Video indices [start, stop) of chunk `i`."""
        if not 0 <= i < self.n_chunks:
            raise StoreError(f"chunk {i} is out of range: {self.path} has {self.n_chunks} chunks")
        start = i * self.videos_per_chunk
        return start, min(start + self.videos_per_chunk, self.n_videos)

    def array(self, name: str) -> zarr.Array:
        """The zarr array of field `name`."""
        if name not in self.arrays:
            raise StoreError(
                f"{self.path} has no field {name!r}; its fields are {sorted(self.fields)}"
            )
        return self.arrays[name]

    def read(self, name: str, videos: slice | Sequence[int] | np.ndarray) -> np.ndarray:
        """Field `name` of the given videos, in the given order: (v, T, *shape) or (v, *shape)."""
        arr = self.array(name)
        if isinstance(videos, slice):
            return self._checked(name, lambda: arr[videos], chunks.chunks_of_rows(arr, videos))
        idx = np.asarray(videos, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -self.n_videos or idx.max() >= self.n_videos):
            raise StoreError(
                f"video indices out of range 0..{self.n_videos - 1}: {idx.tolist()[:10]}"
            )
        if not idx.size:
            return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
        idx = idx % self.n_videos
        # zarr reads only the chunks these videos sit in
        return self._checked(name, lambda: arr.oindex[idx], chunks.chunks_of_rows(arr, idx))

    def read_chunk(self, i: int, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Chunk `i` of every field (or of `names`): {name: (stop-start, [T,] *shape)}."""
        start, stop = self.chunk_range(i)
        return {name: self.read(name, slice(start, stop)) for name in (names or self.fields)}

    def _checked(self, name: str, read, touched: list[int]) -> np.ndarray:
        """A read of field `name`: a decode error, or NaN/inf in a latent field (the fill value
        of a missing chunk file), becomes a StoreError naming the chunk and the repair."""
        finite = self.fields[name].role in LATENT_ROLES
        arr = self.arrays[name]
        return chunks.checked_read(arr, name, read, touched, str(self.path), self.repair, finite)

    def nbytes_stored(self) -> int | None:
        """Bytes on disk: every file under a local folder (metadata included).

        For an fsspec URL it is the sum of zarr's own count of stored chunk bytes per array, or None
        when the backend cannot list sizes; callers must accept None for remote stores.
        """
        if isinstance(self.path, Path):
            return sum(
                os.path.getsize(os.path.join(root, f))
                for root, _, files in os.walk(self.path)
                for f in files
            )
        try:
            return int(sum(a.nbytes_stored() for a in self.arrays.values()))
        except Exception:  # backends differ in what listing they support; size is informational
            return None

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}:{s.role}" for n, s in self.fields.items())
        return (
            f"LatentStore({str(self.path)!r}, videos={self.n_videos}, frames={self.n_frames}, "
            f"complete={self.complete}, fields=[{fields}])"
        )
