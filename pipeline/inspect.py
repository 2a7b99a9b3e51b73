"""What a path holds (dataset, latent store or run folder), as a list of (label, text) rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zarr

from vidlat.errors import StoreError
from vidlat.stages.common.checkpoint import STATE_FILE, latest_dir, parse_state
from vidlat.store.chunks import Damage
from vidlat.store.format import KIND_LATENTS, KIND_VIDEOS
from vidlat.store.reader import LatentStore
from vidlat.store.videos import REPAIR, open_videos

Rows = list[tuple[str, str]]


def folder_bytes(path: Path) -> int:
    """Bytes on disk of every file under `path` (the compressed size of a Zarr folder)."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def _split_text(split: dict[str, Any]) -> str:
    return ", ".join(f"{name} {len(idx)}" for name, idx in split.items())


def describe_videos(path: Path) -> Rows:
    """Rows for a video dataset: shape, source, split sizes, fingerprint, factors, size on disk."""
    v = open_videos(path, check=False)  # damage is reported by --verify, not refused
    raw = int(v.array.nbytes)
    stored = folder_bytes(path)
    rows: Rows = [
        ("kind", "videos (uint8, axes V, T, H, W, C)"),
        ("shape", str(tuple(v.shape))),
        ("source", v.source),
        ("split", _split_text(v.split)),
        ("fingerprint", v.fingerprint),
        ("chunks", str(tuple(v.array.chunks))),
        ("size on disk", f"{human_bytes(stored)} ({raw / max(stored, 1):.1f}x compression)"),
    ]
    if names := v.factor_names():
        rows.append(("factors", ", ".join(names)))
    return rows


def describe_latents(path: Path) -> Rows:
    """Rows for a latent store: fields with roles and shapes, provenance, completeness, size."""
    store = LatentStore.open(path, require_complete=False)
    attrs = store.attrs
    n_chunks = len(store.written)
    rows: Rows = [
        ("kind", "latent store (axes V, T, [N,] D)"),
        ("videos x frames", f"{store.n_videos} x {store.n_frames}"),
        ("dtype", str(store.dtype)),
        ("complete", f"{store.complete} ({int(store.written.sum())}/{n_chunks} chunks written)"),
    ]
    for name, spec in store.fields.items():
        lead = "(V, T" if spec.per_frame else "(V"
        shape = ", ".join([lead, *map(str, spec.shape)]) + ")"
        rows.append((f"field {name}", f"{spec.role:8s} {shape}"))
    if attrs.get("slots"):
        rows.append(("slots", str(attrs["slots"])))
    encoder = attrs.get("encoder") or {}
    rows.append(("encoder", f"{encoder.get('model', '?')}  sha256 {encoder.get('hash', '?')}"))
    source = attrs.get("source") or {}
    rows.append(
        ("source", f"{source.get('path', '?')}  fingerprint {source.get('fingerprint', '?')}")
    )
    rows.append(("split", _split_text(attrs.get("split") or {})))
    rows.append(("size on disk", human_bytes(folder_bytes(path))))
    return rows


def describe_run(path: Path) -> Rows:
    """Rows for a run folder holding checkpoints (train-ae or train-predictor output)."""
    folder = latest_dir(path)  # CheckpointError when `latest` names nothing complete
    latest = folder.name
    state = parse_state(folder / STATE_FILE, (folder / STATE_FILE).read_text())
    meta = state.meta
    rows: Rows = [
        ("kind", f"run folder ({meta.get('kind', 'checkpoint')})"),
        ("latest checkpoint", f"{latest} (step {state.step})"),
    ]
    for key in ("model", "predictor", "encoder_hash", "dataset_fingerprint"):
        if key in meta:
            rows.append((key, str(meta[key])))
    weights = path / "checkpoints" / latest / "model.safetensors"
    rows.append(("weights", f"{human_bytes(weights.stat().st_size)}  {weights}"))
    return rows


def describe(path: str | Path) -> Rows:
    """Detect what `path` holds and describe it; StoreError if it is none of vidlat's outputs."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path} does not exist; give a dataset, latent store or run folder")
    if (path / "checkpoints" / "latest").is_file():
        return describe_run(path)
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception:  # zarr raises several types for a folder that is not a group
        raise StoreError(
            f"{path} is neither a Zarr group nor a run folder; "
            "vidlat inspect reads datasets (vidlat data), latent stores (vidlat encode) "
            "and run folders"
        ) from None
    kind = (group.attrs.get("vidlat") or {}).get("kind")
    if kind == KIND_VIDEOS:
        return describe_videos(path)
    if kind == KIND_LATENTS:
        return describe_latents(path)
    raise StoreError(f"{path} is a Zarr group but not one vidlat wrote (no 'vidlat' attribute)")


def damaged_chunks(path: str | Path) -> tuple[list[Damage], str]:
    """Decode every chunk of every array of a dataset or latent store (and check latents are
    finite): the damaged chunks, and how to repair them. A run folder has no chunks: ([], "")."""
    path = Path(path)
    if (path / "checkpoints" / "latest").is_file() or not path.exists():
        return [], ""
    kind = (zarr.open_group(str(path), mode="r").attrs.get("vidlat") or {}).get("kind")
    if kind == KIND_VIDEOS:
        return open_videos(path, check=False).damaged_chunks(decode=True), REPAIR
    store = LatentStore.open(path, require_complete=False)
    return store.damaged_chunks(decode=True), store.repair
