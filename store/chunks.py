"""Every chunk read is checked: chunk files listed against what should be there, codec errors
turned into one StoreError naming the array, the chunk and the repair, and a decode-everything scan.

Chunks of vidlat arrays hold whole videos: chunk `i` is the chunk row `i` along axis 0 (V), and
every other axis is one chunk wide. Zarr reads a chunk file that is absent as fill values, so a
deleted file would silently become NaN latents or black frames; these helpers make it an error.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import zarr
from zarr.core.sync import sync

from vidlat.errors import StoreError, VidlatError

T = TypeVar("T")

# Set in the `vidlat` block of stores and datasets written with write_empty_chunks: there every
# chunk has a file, even one equal to the fill value, so any absent file is damage. Older ones
# lack the files of all-fill chunks: latents (finite, NaN fill) always have theirs, all-zero aux
# and factor chunks may not (so those arrays are not listed there), and an all-black chunk of
# an old dataset's videos may not either (an absent one is told from a lost one by the dataset's
# fingerprint: see VideoArray.damaged_chunks).
EVERY_CHUNK_STORED = "every_chunk_stored"
WRITE_ALL = {"write_empty_chunks": True}
MISSING = "chunk file is missing"  # the problem of a Damage whose chunk file is absent


@dataclass(frozen=True)
class Damage:
    """One damaged chunk: array name, chunk index along V, and what is wrong with it."""

    array: str
    chunk: int
    problem: str

    def __str__(self) -> str:
        return f"chunk {self.chunk} of {self.array!r}: {self.problem}"


def writing(array: zarr.Array) -> zarr.Array:
    """The same array, writing a file for every chunk (even one equal to the fill value)."""
    return array.with_config(WRITE_ALL)


def n_chunk_rows(array: zarr.Array) -> int:
    return -(-array.shape[0] // array.chunks[0]) if array.shape[0] else 0


def chunk_keys(array: zarr.Array, i: int) -> list[str]:
    """Store keys of every chunk file of chunk row `i` (relative to the store root)."""
    grid = [range(-(-s // c)) for s, c in zip(array.shape[1:], array.chunks[1:], strict=True)]
    encode = array.metadata.chunk_key_encoding.encode_chunk_key
    return [f"{array.path}/{encode((i, *rest))}" for rest in itertools.product(*grid)]


async def _list(store: Any, prefix: str) -> set[str]:
    return {key async for key in store.list_prefix(prefix)}


def stored_keys(array: zarr.Array) -> set[str]:
    """One listing of the array's files (works for local folders and fsspec URLs alike)."""
    return sync(_list(array.store, f"{array.path}/"))


def absent_chunks(array: zarr.Array, chunks: Iterable[int]) -> list[int]:
    """Chunk rows among `chunks` with at least one chunk file missing, ascending."""
    present = stored_keys(array)
    return sorted(int(i) for i in chunks if not present.issuperset(chunk_keys(array, int(i))))


def _rows(array: zarr.Array, i: int) -> slice:
    per = array.chunks[0]
    return slice(i * per, min((i + 1) * per, array.shape[0]))


def decode_problem(array: zarr.Array, i: int, finite: bool) -> str | None:
    """Why chunk row `i` cannot be used (undecodable, or NaN/inf where `finite`); None if fine."""
    try:
        data = array[_rows(array, i)]
    except Exception as exc:  # blosc/zstd, shape and IO errors all mean the file is damaged
        return f"cannot be decoded ({type(exc).__name__}: {exc})"
    if finite and data.dtype.kind == "f" and not np.isfinite(data).all():
        return "holds NaN/inf values (a missing or damaged chunk file)"
    return None


def scan(
    arrays: Mapping[str, zarr.Array],
    chunks: Sequence[int],
    *,
    finite: Iterable[str] = (),
    decode: bool = True,
) -> list[Damage]:
    """Damaged chunks among `chunks` of every array: absent files, then (with `decode`) every
    chunk decoded and, for the arrays named in `finite`, checked for NaN/inf."""
    finite = set(finite)
    damage: list[Damage] = []
    for name, array in arrays.items():
        absent = set(absent_chunks(array, chunks))
        damage += [Damage(name, i, MISSING) for i in sorted(absent)]
        if decode:
            for i in chunks:
                if i not in absent and (problem := decode_problem(array, i, name in finite)):
                    damage.append(Damage(name, int(i), problem))
    return sorted(damage, key=lambda d: (d.chunk, d.array))


def summary(damage: Sequence[Damage], limit: int = 5) -> str:
    """The first few damaged chunks in one line."""
    text = "; ".join(str(d) for d in damage[:limit])
    return text + (f"; and {len(damage) - limit} more" if len(damage) > limit else "")


def checked_read(
    array: zarr.Array,
    name: str,
    read: Callable[[], T],
    chunks: Iterable[int],
    where: str,
    repair: str,
    finite: bool = False,
) -> T:
    """`read()` of `array`, with a decode error (or NaN/inf where `finite`) turned into one
    StoreError naming `where`, the array, the first damaged chunk among `chunks` and `repair`."""
    try:
        data = read()
    except VidlatError:
        raise
    except Exception as exc:
        bad = _first_bad(array, chunks, finite) or f"cannot be decoded ({type(exc).__name__})"
        raise StoreError(f"{where} is damaged: {bad}; {repair}") from None
    if finite and isinstance(data, np.ndarray) and data.dtype.kind == "f":
        if not np.isfinite(data).all():
            bad = _first_bad(array, chunks, finite) or "holds NaN/inf values"
            raise StoreError(f"{where} is damaged: {bad}; {repair}")
    return data


def _first_bad(array: zarr.Array, chunks: Iterable[int], finite: bool) -> str | None:
    name = array.path
    chunks = sorted({int(i) for i in chunks})
    absent = absent_chunks(array, chunks)
    if absent:
        return f"chunk {absent[0]} of {name!r} (videos {_span(array, absent[0])}) is missing"
    for i in chunks:
        if problem := decode_problem(array, i, finite):
            return f"chunk {i} of {name!r} (videos {_span(array, i)}) {problem}"
    return None


def _span(array: zarr.Array, i: int) -> str:
    rows = _rows(array, i)
    return f"{rows.start}..{rows.stop - 1}"


def chunks_of_rows(array: zarr.Array, rows: slice | np.ndarray) -> list[int]:
    """Chunk rows touched by a slice (step 1) or an index array along axis 0."""
    per = array.chunks[0]
    if isinstance(rows, slice):
        start, stop, _ = rows.indices(array.shape[0])
        return list(range(start // per, math.ceil(stop / per))) if stop > start else []
    return sorted(set((np.asarray(rows, dtype=np.int64) // per).tolist()))
