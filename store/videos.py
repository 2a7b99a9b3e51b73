"""Video datasets at rest: a Zarr v3 group of uint8 videos (V, T, H, W, C) and optional factors.

Layout of a dataset folder (e.g. videos.zarr/):
  videos           uint8 (V, T, H, W, C), chunks (videos_per_chunk, T, H, W, C), Blosc/Zstd
  factors/<name>   ground-truth factors, first axis V; group attribute `factors` maps name -> text
  attrs["vidlat"]  {kind: "videos", format_version, source, split, fingerprint, source_config,
                   complete}
  config.yaml      the resolved config of the command that made it (ignored by Zarr)

A writer creates the arrays at their final shape with `complete=False`, and `finish()` sets the
block with `complete=True` last, so a dataset whose writing was interrupted is refused on open.
VideoPool holds the videos of one split in memory, all of them or a rotating few chunks, for the
pixel samplers (train-ae's pairs, the online baseline's windows).
"""

from __future__ import annotations

import functools
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from vidlat.errors import ConfigError, DataError, StoreError
from vidlat.store import chunks, places
from vidlat.store.format import KIND_VIDEOS, check_format, compressor, consolidate, vidlat_attrs

VIDEOS = "videos"
FACTORS = "factors"
VIDEO_DIMS = ("video", "time", "height", "width", "channel")  # dimension_names, for xarray
SPLITS = ("train", "val", "test")

Index = slice | Sequence[int] | np.ndarray
_EVERY = {chunks.EVERY_CHUNK_STORED: True}  # every chunk has a file: an absent one is damage


def create_videos(
    path: str | Path,
    n_videos: int,
    n_frames: int,
    height: int,
    width: int,
    channels: int,
    *,
    videos_per_chunk: int = 8,
    overwrite: bool = False,
) -> VideoWriter:
    """Create an empty dataset for uint8 videos (V, T, H, W, C) and return its writer."""
    path = places.local_folder(path, "a video dataset")
    dims = {"n_videos": n_videos, "n_frames": n_frames, "height": height, "width": width}
    dims |= {"channels": channels, "videos_per_chunk": videos_per_chunk}
    if bad := {k: v for k, v in dims.items() if int(v) < 1}:
        raise ConfigError(f"video dataset sizes must be at least 1, got {bad}")
    # Written beside `path` and swapped in by finish(): a failure or a kill leaves an old
    # dataset intact, and --overwrite replaces only a dataset, never a store or a run.
    places.check_place(path, KIND_VIDEOS, overwrite)
    work = places.beside(path)
    group = zarr.open_group(work, mode="w", zarr_format=3)
    # Marked incomplete from the first byte on, so an interrupted run is refused by open_videos.
    group.attrs["vidlat"] = vidlat_attrs(KIND_VIDEOS, complete=False, **_EVERY)
    shape = (n_videos, n_frames, height, width, channels)
    group.create_array(
        VIDEOS,
        shape=shape,
        chunks=(min(videos_per_chunk, n_videos), *shape[1:]),
        dtype="uint8",
        compressors=compressor("uint8"),
        fill_value=0,
        dimension_names=VIDEO_DIMS,
    )
    return VideoWriter(path, group, work)


class VideoWriter:
    """Writes whole videos and factors into a new dataset at `work`; `finish()` marks it complete
    and moves it to `path` (replacing an old one only then); `abort()` drops it."""

    def __init__(self, path: Path, group: zarr.Group, work: Path | None = None):
        self.path, self.group, self.work = path, group, work
        self.array = chunks.writing(group[VIDEOS])
        self.shape: tuple[int, ...] = tuple(self.array.shape)
        self.videos_per_chunk = int(self.array.chunks[0])
        self._written = np.zeros(self.shape[0], dtype=bool)
        self._factors: dict[str, str] = {}

    def _check_range(self, start: int, count: int, what: str) -> None:
        if start < 0 or start + count > self.shape[0]:
            raise StoreError(
                f"{what} for videos {start}..{start + count - 1} is outside the dataset's "
                f"{self.shape[0]} videos"
            )

    def write(self, start: int, frames: np.ndarray) -> None:
        """Write videos `start .. start + v - 1` from uint8 `frames` (v, T, H, W, C)."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.shape[1:] != self.shape[1:]:
            raise DataError(
                f"videos to write must be uint8 (v, {', '.join(map(str, self.shape[1:]))}), "
                f"got {frames.dtype} {frames.shape}"
            )
        self._check_range(start, len(frames), "a write")
        self.array[start : start + len(frames)] = frames
        self._written[start : start + len(frames)] = True

    def write_factor(
        self,
        name: str,
        start: int,
        array: np.ndarray,
        description: str,
        dims: Sequence[str] | None = None,
    ) -> None:
        """Write rows `start ..` of factor `name` (V, ...); the array is created on first write.

        dims: its dimension names after `video` (e.g. ("time", "object", "xy")); default
        `<name>_dim1`, ... (xarray needs one size per name, and factors' sizes differ).
        """
        array = np.asarray(array)
        if not name.isidentifier():
            raise StoreError(f"factor name {name!r} must be a Python identifier")
        factors = self.group.require_group(FACTORS)
        if name not in self._factors:
            shape = (self.shape[0], *array.shape[1:])
            grid = (self.videos_per_chunk, *(max(1, d) for d in array.shape[1:]))
            fill = np.zeros((), dtype=array.dtype).item()
            kind = "uint8" if array.dtype.itemsize == 1 else "float"
            factors.create_array(
                name,
                shape=shape,
                chunks=grid,
                dtype=array.dtype,
                compressors=compressor(kind),
                fill_value=fill,
                dimension_names=_factor_dims(name, array.ndim, dims),
            )
            self._factors[name] = description
            factors.attrs["factors"] = dict(self._factors)
        target = chunks.writing(factors[name])
        if array.shape[1:] != target.shape[1:]:
            raise DataError(f"factor {name!r} rows are {target.shape[1:]}, got {array.shape[1:]}")
        self._check_range(start, len(array), f"factor {name!r}")
        target[start : start + len(array)] = array

    def fingerprint(self) -> str:
        """SHA-256 of the uint8 bytes in video order (see `fingerprint`)."""
        return fingerprint(self.array)

    def finish(
        self, source: str, source_config: dict[str, Any], split: dict[str, Any] | None = None
    ) -> Path:
        """Check every video was written, then set the `vidlat` block with complete=True, last."""
        if not self._written.all():
            missing = np.flatnonzero(~self._written)
            raise StoreError(
                f"{self.path}: videos {missing[:8].tolist()} (of {len(missing)}) were never "
                "written; the dataset stays marked incomplete"
            )
        n = self.shape[0]
        split = make_split(n) if split is None else split
        split = {name: [int(i) for i in idx] for name, idx in split.items()}
        if bad := [i for idx in split.values() for i in idx if not 0 <= i < n]:
            raise StoreError(f"split indices {bad[:8]} are outside 0..{n - 1}")
        block = vidlat_attrs(
            KIND_VIDEOS,
            source=source,
            split=split,
            fingerprint=self.fingerprint(),
            source_config=source_config,
            complete=True,
            **_EVERY,
        )
        self.group.attrs["vidlat"] = block  # one write of the whole block: complete comes with it
        consolidate(self.work if self.work is not None else self.path)  # one read opens it
        if self.work is not None:
            places.swap_in(self.work, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the half-written dataset; an old one at `path` stays as it was."""
        if self.work is not None:
            shutil.rmtree(self.work, ignore_errors=True)


def fingerprint(array: zarr.Array) -> str:
    """SHA-256 of a videos array's uint8 bytes in video order, read one chunk of videos at a
    time (an absent chunk file reads as black: the fill value)."""
    digest = hashlib.sha256()
    step = int(array.chunks[0])
    for start in range(0, array.shape[0], step):
        digest.update(np.ascontiguousarray(array[start : start + step]).data)
    return digest.hexdigest()


def _factor_dims(name: str, ndim: int, dims: Sequence[str] | None) -> tuple[str, ...]:
    """A factor array's dimension_names: `video`, then `dims` or `<name>_dim<i>`."""
    rest = tuple(dims) if dims is not None else tuple(f"{name}_dim{i}" for i in range(1, ndim))
    if len(rest) != ndim - 1:
        raise StoreError(f"factor {name!r} has {ndim - 1} axes after video, got dims {rest}")
    return ("video", *rest)


def make_split(
    n_videos: int, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, list[int]]:
    """Random train/val/test video indices (each sorted), deterministic in `seed`.

    Every split holds at least one video when n_videos >= 3; with fewer, all go to train.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(f"split fractions {fractions} must be three values >= 0 summing to 1")
    n_val = n_test = 0
    if n_videos >= 3:
        n_val = min(max(1, round(n_videos * fractions[1])), n_videos - 2)
        n_test = min(max(1, round(n_videos * fractions[2])), n_videos - 1 - n_val)
    order = np.random.default_rng(seed).permutation(n_videos)
    parts = np.split(order, [n_videos - n_val - n_test, n_videos - n_test])
    return {name: sorted(int(i) for i in part) for name, part in zip(SPLITS, parts, strict=True)}


def open_videos(path: str | Path, check: bool = True) -> VideoArray:
    """Open a complete video dataset for reading; StoreError says what is wrong and what to do.

    With `check`, the chunk files are listed once and a missing one is a StoreError (zarr would
    read it as black frames); a caller that opens it again per task passes check=False."""
    path = Path(path)
    if not path.exists():
        raise StoreError(
            f"{path} does not exist; make a dataset with `vidlat data synth|moving-mnist|import`"
        )
    try:
        group = zarr.open_group(path, mode="r", zarr_format=3)
    except Exception as exc:  # zarr raises several types for "no group here"; all mean the same
        raise StoreError(
            f"{path} is not a Zarr v3 group ({type(exc).__name__}); give a folder written by "
            "`vidlat data`"
        ) from None
    block = check_format(group.attrs, str(path), KIND_VIDEOS)
    if not block.get("complete"):
        raise StoreError(
            f"{path}: the dataset was interrupted while being written; re-run the vidlat data "
            "command with --overwrite"
        )
    # get, not a listing of members: listing warns about the config.yaml kept beside the arrays
    if not isinstance(group.get(VIDEOS), zarr.Array):
        raise StoreError(f"{path} has no '{VIDEOS}' array; re-create it with `vidlat data`")
    videos = VideoArray(path, group, block)
    if check:
        videos.check_chunks()
    return videos


REPAIR = "re-create the dataset with the vidlat data command that made it (--overwrite)"


def _gather(array: zarr.Array, videos: Index, n: int, path: Path) -> np.ndarray:
    """Rows `videos` (see _gather_rows); a chunk that does not decode is one StoreError."""
    rows = videos if isinstance(videos, slice) else np.asarray(videos, dtype=np.int64) % max(n, 1)
    touched = chunks.chunks_of_rows(array, rows)
    read = functools.partial(_gather_rows, array, videos, n, path)
    return chunks.checked_read(array, array.path, read, touched, str(path), REPAIR)


def _gather_rows(array: zarr.Array, videos: Index, n: int, path: Path) -> np.ndarray:
    """Rows `videos` of an array whose first axis is V, in the requested order.

    Indices are read one chunk at a time, each chunk over the span it needs, so unsorted or
    repeated indices cost one decompression per chunk touched.
    """
    if isinstance(videos, slice):
        start, stop, step = videos.indices(n)
        if step == 1:
            return array[start:stop]
        videos = range(start, stop, step)
    idx = np.asarray(videos, dtype=np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)]
        raise DataError(f"video indices {bad[:8].tolist()} are outside 0..{n - 1} of {path}")
    if len(idx) == 0:
        return np.zeros((0, *array.shape[1:]), dtype=array.dtype)
    wanted = np.unique(idx)
    per_chunk = int(array.chunks[0])
    rows = []
    for chunk in np.unique(wanted // per_chunk):
        inside = wanted[wanted // per_chunk == chunk]
        span = array[int(inside[0]) : int(inside[-1]) + 1]
        rows.append(span[inside - inside[0]])
    return np.concatenate(rows)[np.searchsorted(wanted, idx)]


class VideoArray:
    """A complete dataset opened for reading: uint8 videos (V, T, H, W, C) plus factors."""

    def __init__(self, path: Path, group: zarr.Group, block: dict[str, Any]):
        self.path, self.group, self.attrs = path, group, block
        self._factor_arrays: dict[str, zarr.Array] = {}  # opened on first read
        self.array: zarr.Array = group[VIDEOS]
        self.shape: tuple[int, int, int, int, int] = tuple(self.array.shape)
        self.n_videos, self.n_frames, self.height, self.width, self.channels = self.shape
        split = block.get("split") or {}
        self.split = {name: np.asarray(idx, dtype=np.int64) for name, idx in split.items()}
        self.fingerprint: str = block.get("fingerprint", "")
        self.source: str = block.get("source", "")

    def __repr__(self) -> str:
        return f"VideoArray({str(self.path)!r}, shape={self.shape}, source={self.source!r})"

    def arrays(self) -> dict[str, zarr.Array]:
        """The videos and, in datasets written with every chunk stored, the factor arrays (older
        ones may lack the files of all-zero factor chunks)."""
        arrays = {VIDEOS: self.array}
        if self.attrs.get(chunks.EVERY_CHUNK_STORED) and (group := self._factor_group()):
            arrays |= {f"{FACTORS}/{n}": group[n] for n in self.factor_names()}
        return arrays

    def damaged_chunks(self, decode: bool = True) -> list[chunks.Damage]:
        """Chunks with a missing file or (with `decode`) one that does not decode."""
        every = list(range(chunks.n_chunk_rows(self.array)))
        return self._unless_black(chunks.scan(self.arrays(), every, decode=decode))

    def _unless_black(self, damage: list[chunks.Damage]) -> list[chunks.Damage]:
        """`damage` less the absent video chunks that were all black, in a dataset written before
        every chunk got a file: zarr then skipped the file of a chunk equal to the fill value (0),
        so an absent file is a black chunk or a lost one. The rule: the recorded fingerprint
        (SHA-256 of every byte, absent chunks read as black) tells which. If it matches, those
        chunks were black and are kept; if not (or none was recorded) they are damage."""
        absent = [d for d in damage if d.array == VIDEOS and d.problem == chunks.MISSING]
        if self.attrs.get(chunks.EVERY_CHUNK_STORED) or not absent:
            return damage
        try:
            black = bool(self.fingerprint) and fingerprint(self.array) == self.fingerprint
        except Exception:  # another chunk does not decode: the absent ones cannot be vouched for
            black = False
        if black:
            return [d for d in damage if d not in absent]
        lost = f"{chunks.MISSING}, and the videos no longer match the dataset's fingerprint"
        return [chunks.Damage(d.array, d.chunk, lost) if d in absent else d for d in damage]

    def check_chunks(self) -> None:
        """StoreError naming the first chunks whose files are missing (one listing per array)."""
        if damage := self.damaged_chunks(decode=False):
            raise StoreError(f"{self.path} is damaged: {chunks.summary(damage)}; {REPAIR}")

    def read(self, videos: Index) -> np.ndarray:
        """uint8 (v, T, H, W, C) for a slice or a list of indices (returned in the order given)."""
        return _gather(self.array, videos, self.n_videos, self.path)

    def _factor_group(self) -> zarr.Group | None:
        return self.group[FACTORS] if FACTORS in self.group else None

    def factor_names(self) -> list[str]:
        """Names of the ground-truth factor arrays, sorted (empty for imported videos)."""
        group = self._factor_group()
        return sorted(group.array_keys()) if group is not None else []

    def factor_descriptions(self) -> dict[str, str]:
        """name -> text giving each factor's shape, dtype and meaning."""
        group = self._factor_group()
        return dict(group.attrs.get("factors", {})) if group is not None else {}

    def read_factor(self, name: str, videos: Index) -> np.ndarray:
        """Rows `videos` of factor `name` (first axis V), in the order given."""
        array = self._factor_arrays.get(name)
        if array is None:  # its metadata read once (encode reads every factor for every chunk)
            if name not in self.factor_names():
                raise StoreError(
                    f"{self.path} has no factor {name!r}; it has {self.factor_names() or 'none'}"
                )
            array = self._factor_arrays[name] = self._factor_group()[name]
        return _gather(array, videos, self.n_videos, self.path)


class VideoPool:
    """The videos of one split held in host memory for a sampler that draws from them.

    All of the split when it fits `memory_budget` bytes (`in_memory`); otherwise `buffer_chunks`
    whole dataset chunks, chosen at random with the sampler's numpy Generator from this rank's own
    chunks (every world_size-th, all of them if that leaves it none) and re-chosen every
    `refresh_every` draws. The sampler calls `refresh(rng)` once before each draw and then reads
    `held_ids` (sorted dataset indices, (n,)) and `frames` (uint8 (n, T, H, W, C)) in that order.
    `state_dict(rng)`/`load_state_dict(state, rng)` save and restore {rng, draws, chunks}. An
    empty split gives an empty pool: the sampler says what that means.
    """

    def __init__(
        self,
        videos: VideoArray,
        split: str,
        *,
        memory_budget: int,
        buffer_chunks: int,
        refresh_every: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.videos, self.buffer_chunks, self.refresh_every = videos, buffer_chunks, refresh_every
        self.ids = np.unique(videos.split.get(split, np.zeros(0, np.int64)))  # sorted, int64
        self.per_chunk = int(videos.array.chunks[0])
        self.in_memory = len(self.ids) * int(np.prod(videos.shape[1:])) <= memory_budget
        chunks = np.unique(self.ids // self.per_chunk)
        own = chunks[rank::world_size]
        self.chunks = own if own.size else chunks  # this rank's chunks
        self.draws = 0
        self.held_chunks: list[int] = []  # empty while the whole split is held
        self.held_ids, self.frames = self.ids[:0], np.zeros((0, *videos.shape[1:]), np.uint8)
        if self.in_memory:
            self._hold(self.ids)

    def _hold(self, ids: np.ndarray) -> None:
        self.held_ids, self.frames = ids, self.videos.read(ids)  # (n, T, H, W, C)

    def hold_chunks(self, chunks) -> None:
        """Hold the split's videos of dataset chunks `chunks` (and no others)."""
        self.held_chunks = sorted(int(c) for c in chunks)
        self._hold(self.ids[np.isin(self.ids // self.per_chunk, self.held_chunks)])

    def refresh(self, rng: np.random.Generator) -> None:
        """Count one draw; first, when streaming and due, hold other chunks drawn with `rng`."""
        if not self.in_memory and self.draws % self.refresh_every == 0:
            n = min(self.buffer_chunks, len(self.chunks))
            self.hold_chunks(rng.choice(self.chunks, size=n, replace=False))
        self.draws += 1

    def state_dict(self, rng: np.random.Generator) -> dict[str, Any]:
        """JSON-able position: the sampler's RNG state, draws counted, chunks held."""
        return {"rng": rng.bit_generator.state, "draws": self.draws, "chunks": self.held_chunks}

    def load_state_dict(self, state: dict[str, Any], rng: np.random.Generator) -> None:
        """Continue where `state_dict` was taken (same dataset, split and arguments)."""
        rng.bit_generator.state = state["rng"]
        self.draws = int(state["draws"])
        if not self.in_memory and state["chunks"]:
            self.hold_chunks(state["chunks"])
