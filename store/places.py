"""Output places: an output never overlaps an input, `--overwrite` replaces only what the same
command made, and only once the new result is complete (written beside it, then swapped in).

What a folder is, as vidlat made it: "videos" or "latents" (a Zarr group with that `vidlat` kind),
"run" (a training run: checkpoints/latest), "generate" (a folder holding the GENERATED marker).
A sibling `.NAME.new-PID` holds a result being written; `.NAME.old-PID` the one being replaced.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from vidlat.errors import ConfigError, StoreError

GENERATED = ".vidlat-generate"  # marker file of a `vidlat generate` output folder
WHAT = {
    "videos": "a video dataset (vidlat data)",
    "latents": "a latent store (vidlat encode)",
    "run": "a training run folder",
    "generate": "a vidlat generate output folder",
}


def made_by(path: Path) -> str | None:
    """What vidlat output `path` is (see the module docstring), or None."""
    if (path / "checkpoints" / "latest").is_file():
        return "run"
    if (path / GENERATED).is_file():
        return "generate"
    try:
        block = json.loads((path / "zarr.json").read_text()).get("attributes", {}).get("vidlat")
    except (OSError, ValueError, AttributeError):
        return None
    return block.get("kind") if isinstance(block, dict) else None


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def refuse_overlap(out: Path, inputs: Mapping[str, Path | str | None]) -> None:
    """ConfigError when `out` is one of `inputs` ({flag: path}), lies inside it, or contains it."""
    target = Path(out).resolve()
    for flag, path in inputs.items():
        if path is None or "://" in str(path):
            continue
        source = Path(path).resolve()
        if _inside(target, source) or _inside(source, target):
            how = "is" if target == source else "is inside" if _inside(target, source) else "holds"
            raise ConfigError(
                f"--out {out} {how} the input {flag} {path}; writing there would destroy it. "
                "Choose another --out"
            )


def check_writable(out: Path) -> None:
    """StoreError when `out` (or the nearest folder above it that exists) is a file or cannot be
    written: said before any work starts, not as a traceback after it."""
    out = Path(out)
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if parent.is_file():
        raise StoreError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"--out {out}: {parent} is not writable; choose another --out")


def check_place(out: Path, kind: str, overwrite: bool, resumable: bool = False) -> bool:
    """Whether `out` exists and will be replaced. Refuses (StoreError): a file, a folder that is
    not writable, an existing non-empty folder without `overwrite` (unless `resumable` and of
    `kind`: the command continues it), and with it one that is not `kind` (overwrite replaces
    only what the same command made)."""
    out = Path(out)
    clear_stale(out)
    check_writable(out)
    if not out.exists() or not any(out.iterdir()):
        return False
    found = made_by(out)
    if resumable and not overwrite and found == kind:
        return False
    if not overwrite and not (resumable and found is not None):
        raise StoreError(
            f"{out} already exists ({WHAT.get(found or '', 'not made by vidlat')}); pass "
            "--overwrite to replace it, or choose another --out"
        )
    if found != kind:
        raise StoreError(
            f"{out} is {WHAT.get(found or '', 'not a vidlat output')}, not {WHAT[kind]}, so "
            "vidlat will not replace it; choose another --out or remove it yourself"
        )
    return True


def beside(out: Path) -> Path:
    """Where a new result for `out` is written before it is swapped in (same folder, same disk)."""
    out = Path(out)
    return out.parent / f".{out.name}.new-{os.getpid()}"


def swap_in(new: Path, out: Path) -> Path:
    """Put the complete result `new` at `out`, then delete the old one; a kill in between leaves
    the old one under `.NAME.old-PID`, which clear_stale restores."""
    out = Path(out)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
    os.rename(new, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def publish(new: Path, out: Path) -> bool:
    """Move the complete `new` to `out` unless something appeared there meanwhile (another
    process published first): then `new` is dropped and False returned."""
    try:
        os.rename(new, out)  # atomic; refused when `out` is a non-empty folder
    except OSError:
        if not Path(out).is_dir() or not any(Path(out).iterdir()):
            raise
        shutil.rmtree(new, ignore_errors=True)
        return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clear_stale(out: Path) -> None:
    """Remove results left half-written beside `out` by dead processes; restore an old result a
    kill left moved aside (its replacement had not yet been swapped in)."""
    out = Path(out)
    if not out.parent.is_dir():
        return
    for path in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = path.name.rpartition("-")
        if not pid.isdigit() or _alive(int(pid)) or not kind.endswith((".new", ".old")):
            continue
        if kind.endswith(".old") and not out.exists():
            os.rename(path, out)
        else:
            shutil.rmtree(path, ignore_errors=True)
