"""Create a latent store and fill it chunk by chunk: arrays at final shape up front, resumable.

Layout (Zarr v3 group): one array per FieldSpec, per-frame fields (V, T, *shape) and per-video
fields (V, *shape), chunked (videos_per_chunk, [T,] *shape) so that a chunk holds whole videos; a
bool array `written` (n_chunks,) with chunk size 1; and the attribute block `vidlat` (see
store.format), whose `complete` flag is set last. A writer only touches the chunks of the index it
was given and its own element of `written`, so processes writing different chunks never share a
file; only `create_store` and `mark_complete` rewrite the group attributes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from vidlat.errors import DataError, StoreError
from vidlat.store import chunks
from vidlat.store.format import (
    KIND_LATENTS,
    LATENT_ROLES,
    WRITTEN,
    FieldSpec,
    compressor,
    consolidate,
    field_dimension_names,
    field_shape,
    open_group_checked,
    parse_block,
    store_location,
    vidlat_attrs,
)
from vidlat.store.reader import LatentStore

STORE_DTYPES = ("float32", "float16")
# Keys of the vidlat block that create_store computes itself; `attrs` may not set them.
_RESERVED = (
    "kind",
    "format_version",
    "fields",
    "n_videos",
    "n_frames",
    "videos_per_chunk",
    "dtype",
    "complete",
)


def field_dtype(spec: FieldSpec, store_dtype: str) -> np.dtype:
    """Latent roles use the store dtype; aux fields keep their own dtype (None: the store dtype)."""
    if spec.role in LATENT_ROLES or spec.dtype is None:
        return np.dtype(store_dtype)
    return np.dtype(spec.dtype)


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so numpy scalars/arrays in provenance become lists and numbers."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray | np.generic):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise StoreError(f"store attribute value {obj!r} is not JSON-serialisable; pass plain data")

    return json.loads(json.dumps(value, default=default))


def _check_layout(
    fields: Sequence[FieldSpec], n_videos: int, n_frames: int, videos_per_chunk: int, dtype: str
) -> None:
    if n_videos < 1 or n_frames < 1 or videos_per_chunk < 1:
        raise StoreError(
            f"a latent store needs n_videos, n_frames and videos_per_chunk >= 1; got {n_videos}, "
            f"{n_frames}, {videos_per_chunk}"
        )
    if dtype not in STORE_DTYPES:
        raise StoreError(f"store dtype {dtype!r} is not supported; use one of {STORE_DTYPES}")
    names = [f.name for f in fields]
    if not names:
        raise StoreError("a latent store needs at least one field")
    if len(set(names)) != len(names) or WRITTEN in names:
        raise StoreError(f"field names must be unique and not {WRITTEN!r}; got {names}")


def _check_split(split: Mapping[str, Any], n_videos: int) -> None:
    for name, idx in split.items():
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_videos):
            raise StoreError(
                f"split {name!r} names videos outside 0..{n_videos - 1}; the split must come from "
                "the dataset that is being encoded"
            )


def _clear(location: str | Path, overwrite: bool) -> None:
    """Refuse an existing local path unless `overwrite`; then remove it, but only if it is Zarr."""
    if not isinstance(location, Path) or not location.exists():
        return
    if not overwrite:
        raise StoreError(
            f"{location} already exists; pass --overwrite to replace it, or choose another --out"
        )
    # Guard against `--out ~ --overwrite`: only ever delete what is recognisably a Zarr node.
    if location.is_dir() and (location / "zarr.json").is_file():
        shutil.rmtree(location)
    elif location.is_dir() and not any(location.iterdir()):
        location.rmdir()
    else:
        raise StoreError(
            f"{location} exists and is not a Zarr store, so --overwrite will not delete it; "
            "remove it yourself or choose another --out"
        )


def create_store(
    path: str | Path,
    fields: Sequence[FieldSpec],
    n_videos: int,
    n_frames: int,
    *,
    videos_per_chunk: int = 8,
    dtype: str = "float32",
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> StoreWriter:
    """Create an empty store with every array at its final shape, and return its writer.

    attrs: provenance that goes inside the `vidlat` block (encoder {hash, model, config},
    source {path, fingerprint}, split {name: [video indices]}, slots); missing ones are stored
    as None (split as {}).
    """
    fields = list(fields)
    _check_layout(fields, n_videos, n_frames, videos_per_chunk, dtype)
    extra = _jsonable(dict(attrs or {}))
    if clash := sorted(set(extra) & set(_RESERVED)):
        raise StoreError(
            f"attrs may not set {clash}; create_store computes them from its arguments"
        )
    extra = {"encoder": None, "source": None, "split": {}, "slots": None, **extra}
    _check_split(extra["split"] or {}, n_videos)
    location = store_location(path)
    _clear(location, overwrite)
    try:
        group = zarr.create_group(str(location), zarr_format=3, overwrite=overwrite)
    except zarr.errors.ContainsGroupError:  # an fsspec URL that already holds a group
        raise StoreError(f"{location} already exists; pass --overwrite to replace it") from None
    slots = extra["slots"]
    for spec in fields:
        _create_field(group, spec, n_videos, n_frames, videos_per_chunk, dtype, slots)
    n_chunks = -(-n_videos // videos_per_chunk)
    group.create_array(
        WRITTEN,
        shape=(n_chunks,),
        chunks=(1,),
        dtype="bool",
        fill_value=False,
        dimension_names=("chunk",),
    )
    # The vidlat block goes on last: a group without it is not taken for a (resumable) store.
    group.attrs["vidlat"] = vidlat_attrs(
        KIND_LATENTS,
        **extra,
        fields=[spec.to_json() for spec in fields],
        n_videos=n_videos,
        n_frames=n_frames,
        videos_per_chunk=videos_per_chunk,
        dtype=dtype,
        complete=False,
        **{chunks.EVERY_CHUNK_STORED: True},
    )
    return StoreWriter(location, group)


def _create_field(
    group: zarr.Group,
    spec: FieldSpec,
    n_videos: int,
    n_frames: int,
    vpc: int,
    dtype: str,
    slots: int | None,
) -> None:
    shape = field_shape(spec, n_videos, n_frames)
    np_dtype = field_dtype(spec, dtype)
    # NaN fill makes a read of an unwritten float region obviously wrong rather than silently zero.
    fill = float("nan") if np_dtype.kind == "f" else 0
    group.create_array(
        spec.name,
        shape=shape,
        chunks=(min(vpc, n_videos), *shape[1:]),
        dtype=np_dtype,
        compressors=[compressor("uint8" if np_dtype == np.uint8 else "float")],
        fill_value=fill,
        attributes={"role": spec.role, "per_frame": spec.per_frame},
        dimension_names=field_dimension_names(spec, slots),
    )


def open_writer(path: str | Path) -> StoreWriter:
    """Open an existing latent store for writing (resume); StoreError if it is not one."""
    location = store_location(path)
    return StoreWriter(location, open_group_checked(location, mode="r+"))


class StoreWriter:
    """Writes whole chunks of videos into an existing store; safe to use from several processes."""

    def __init__(self, location: str | Path, group: zarr.Group):
        self.path = location
        self.group = group
        self.attrs, self.fields = parse_block(group, location)
        self.n_videos: int = self.attrs["n_videos"]
        self.n_frames: int = self.attrs["n_frames"]
        self.videos_per_chunk: int = self.attrs["videos_per_chunk"]
        self.n_chunks = -(-self.n_videos // self.videos_per_chunk)
        # Array handles (metadata) opened once; chunk data is always read fresh from the store.
        # Every chunk gets a file, even one equal to the fill value (all-zero factors), so that a
        # missing file is always damage.
        self.arrays = {name: chunks.writing(group[name]) for name in (*self.fields, WRITTEN)}

    def chunk_range(self, i: int) -> tuple[int, int]:
        """Video indices [start, stop) of chunk `i`."""
        if not 0 <= i < self.n_chunks:
            raise StoreError(f"chunk {i} is out of range: {self.path} has {self.n_chunks} chunks")
        start = i * self.videos_per_chunk
        return start, min(start + self.videos_per_chunk, self.n_videos)

    def missing_chunks(self) -> list[int]:
        """Chunks not yet written, ascending (read fresh from the store each call)."""
        return [int(i) for i in np.flatnonzero(~self.arrays[WRITTEN][:])]

    def repair(self) -> list[chunks.Damage]:
        """Find damaged written chunks (a file missing or undecodable, NaN/inf in a latent field)
        and mark them unwritten, so that encoding the missing chunks re-encodes them too; the
        store is marked incomplete first, so a kill meanwhile leaves a store a rerun finishes."""
        store = LatentStore(self.path, self.group)
        damage = store.damaged_chunks(decode=True)
        bad = sorted({d.chunk for d in damage})
        if bad:
            self._set_complete(False)
            for i in bad:
                self.arrays[WRITTEN][i] = False
        return damage

    def write_chunk(self, i: int, data: Mapping[str, np.ndarray]) -> None:
        """Write chunk `i`: every field, shaped (stop-start, T, *shape) or (stop-start, *shape).

        Values are cast to the field's stored dtype; latent roles must be finite after the cast.
        `written[i]` is set only after every array region is written.
        """
        start, stop = self.chunk_range(i)
        arrays = {name: self._prepare(name, data, i, stop - start) for name in self.fields}
        if extra := sorted(set(data) - set(self.fields)):
            raise StoreError(
                f"chunk {i} has fields {extra} that the store does not hold "
                f"({sorted(self.fields)}); the model's store fields and its encode() disagree"
            )
        for name, values in arrays.items():
            self.arrays[name][start:stop] = values
        self.arrays[WRITTEN][i] = True

    def _prepare(self, name: str, data: Mapping[str, np.ndarray], i: int, n: int) -> np.ndarray:
        """Field `name` of a chunk of `n` videos, checked (shape, finite) and cast to its dtype."""
        spec = self.fields[name]
        if name not in data:
            raise StoreError(f"chunk {i} is missing field {name!r}; write_chunk needs every field")
        values = np.asarray(data[name])
        expected = field_shape(spec, n, self.n_frames)
        if values.shape != expected:
            raise StoreError(
                f"field {name!r} of chunk {i} is shaped {values.shape}; expected {expected}"
            )
        target = self.arrays[name].dtype
        if not np.can_cast(values.dtype, target, casting="same_kind"):
            raise StoreError(
                f"field {name!r} of chunk {i} is {values.dtype}; the store holds {target}"
            )
        with np.errstate(over="ignore"):  # float16 overflow becomes inf, refused just below
            values = values.astype(target, copy=False)
        if spec.role in LATENT_ROLES and not np.isfinite(values).all():
            bad = int(values.size - np.isfinite(values).sum())
            raise DataError(
                f"field {name!r} of chunk {i} has {bad} non-finite values (NaN/inf); check the "
                "stage-1 run for divergence, or encode with dtype float32 if float16 overflowed"
            )
        return values

    def mark_complete(self) -> None:
        """Set `complete` = True, after checking that every chunk is written."""
        missing = self.missing_chunks()
        if missing:
            raise StoreError(
                f"{self.path} is not finished: {self.n_chunks - len(missing)} of {self.n_chunks} "
                f"chunks written (missing {missing[:10]}{'...' if len(missing) > 10 else ''}); "
                "write them before marking it complete"
            )
        self._set_complete(True)

    def _set_complete(self, complete: bool) -> None:
        block = dict(self.group.attrs["vidlat"])
        block["complete"] = complete
        self.group.attrs["vidlat"] = block
        self.attrs = block
        consolidate(self.path)  # nothing changes after complete: one read opens it
