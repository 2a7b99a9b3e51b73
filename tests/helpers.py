"""Helpers shared by the tests: a complete latent store written from arrays in one call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vidlat.store.format import FieldSpec
from vidlat.store.reader import LatentStore
from vidlat.store.writer import create_store


def write_store(
    path: str | Path,
    fields: Sequence[FieldSpec],
    data: Mapping[str, np.ndarray],
    *,
    split: Mapping[str, Sequence[int]] | None = None,
    encoder_hash: str = "cd" * 32,
    videos_per_chunk: int = 4,
    attrs: Mapping[str, Any] | None = None,
) -> LatentStore:
    """A complete latent store of `fields` holding `data` {field: (V, T, ...)}: every chunk
    written, then marked complete, as vidlat encode leaves one."""
    n_videos, n_frames = next(v for k, v in data.items() if k in {f.name for f in fields}).shape[:2]
    meta = {"encoder": {"hash": encoder_hash, "model": "synthetic", "config": {}}}
    meta |= {"split": dict(split)} if split is not None else {}
    meta |= dict(attrs or {})
    writer = create_store(
        path, fields, n_videos, n_frames, videos_per_chunk=videos_per_chunk, attrs=meta
    )
    for i in range(writer.n_chunks):
        start, stop = writer.chunk_range(i)
        writer.write_chunk(i, {k: v[start:stop] for k, v in data.items()})
    writer.mark_complete()
    return LatentStore.open(path)


def exact_rows(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl without their timing (wall time, throughput), which differ run
    to run: what a resumed run must reproduce exactly."""
    import json

    from vidlat.stages.training.loop import TIMING_KEYS

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def run(*args):
    """`vidlat ARGS` in this process (Typer's CliRunner); its result."""
    from typer.testing import CliRunner

    from vidlat.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(result, *words: str) -> str:
    """The one `error:` line of a failed command (exit 1, no traceback), holding every word."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]
