"""Output places: an output never overlaps an input, `--overwrite` replaces only what the same
command made, and only once the new result is complete (written beside it, then swapped in).

What a folder is, as vidlat made it: "videos" or "latents" (a Zarr group with that `vidlat` kind),
"run" (a training run: checkpoints/latest), "generate" (a folder holding the GENERATED marker).
A sibling `.NAME.new-OWNER` holds a result being written; `.NAME.old-OWNER` the one being replaced.
OWNER is the writer's PID for a local folder, `PID.HOST` for an fsspec URL (a latent store on
object storage, or memory://), whose siblings other machines may be writing.

Every function takes a local folder (a Path; a file:// URL counts as one) or an fsspec URL, so the
write-beside-then-swap is the same on both: locally each move is one os.rename; on a filesystem that
cannot rename a folder (s3, gcs, memory) it is a copy then a delete, ordered so that the root
`zarr.json` comes last and goes first: a move cut short never leaves a Zarr group, let alone one
marked complete, and clear_stale tells which side of it is whole.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vidlat.errors import ConfigError, StoreError
from vidlat.store.format import store_location

GENERATED = ".vidlat-generate"  # marker file of a `vidlat generate` output folder
ROOT = "zarr.json"  # a Zarr group's root metadata; in a vidlat group it holds `complete`
WHAT = {
    "videos": "a video dataset (vidlat data)",
    "latents": "a latent store (vidlat encode)",
    "run": "a training run folder",
    "generate": "a vidlat generate output folder",
}

Place = Path | str  # a local folder, or an fsspec URL (a str holding '://')


# -- one set of primitives for a local folder and an fsspec URL


def _remote(place: Place) -> tuple[Any, str] | None:
    """(filesystem, path on it) of an fsspec URL; None for a local folder."""
    if not isinstance(place, str):
        return None
    import fsspec  # an fsspec URL: the filesystem comes with the user's fsspec install

    fs, path = fsspec.core.url_to_fs(place)
    return fs, path.rstrip("/")


def _place(place: Place) -> Place:
    """A file:// URL as the local folder it names, another URL as it is, else a Path."""
    return store_location(place) if isinstance(place, str) else Path(place)


def _name(place: Place) -> str:
    return place.name if isinstance(place, Path) else place.rstrip("/").rpartition("/")[2]


def _sibling(place: Place, name: str) -> Place:
    """`name` in the folder that holds `place`, as a Path or a URL like `place`."""
    if isinstance(place, Path):
        return place.parent / name
    return f"{place.rstrip('/').rpartition('/')[0]}/{name}"


def exists(place: Place) -> bool:
    """Whether anything is at `place`."""
    place = _place(place)
    remote = _remote(place)
    return remote[0].exists(remote[1]) if remote else Path(place).exists()


def holds_something(place: Place) -> bool:
    """Whether `place` is a folder with at least one entry."""
    place = _place(place)
    if remote := _remote(place):
        fs, path = remote
        return fs.isdir(path) and bool(fs.ls(path, detail=False))
    return Path(place).is_dir() and any(Path(place).iterdir())


def _read(place: Place, rel: str) -> bytes | None:
    """The bytes of file `rel` inside `place`, or None where there is none."""
    try:
        if remote := _remote(place):
            fs, path = remote
            return fs.cat_file(f"{path}/{rel}") if fs.isfile(f"{path}/{rel}") else None
        return (Path(place) / rel).read_bytes()
    except OSError:
        return None


def _is_file(place: Place, rel: str) -> bool:
    if remote := _remote(place):
        return remote[0].isfile(f"{remote[1]}/{rel}")
    return (Path(place) / rel).is_file()


def discard(place: Place) -> None:
    """Remove a result being written (or replaced) and everything in it; nothing if absent."""
    place = _place(place)
    if remote := _remote(place):
        fs, path = remote
        if fs.exists(path):
            fs.rm(path, recursive=True)
    else:
        shutil.rmtree(place, ignore_errors=True)


def _move(source: Place, target: Place) -> None:
    """Move the folder `source` to the absent `target`."""
    remote = _remote(source)
    if remote is None:
        os.rename(source, target)  # atomic on one disk, and siblings share one
        return
    # Object stores (s3, gcs) and memory:// cannot rename a folder, and fsspec's generic mv copies
    # every file in listing order, then deletes: so a copy then a delete here, with the root
    # zarr.json copied last and deleted first, so a copy or a delete cut short is never a group.
    fs, src = remote
    dst = _remote(target)[1]
    files = sorted(fs.find(src))
    root = f"{src}/{ROOT}"
    rest = [f for f in files if f != root]
    if rest:
        fs.copy(rest, [dst + f[len(src) :] for f in rest])
    if root in files:
        fs.cp_file(root, f"{dst}/{ROOT}")
        fs.rm_file(root)
    discard(source)


def _whole(place: Place) -> bool:
    """Whether `place` holds a whole result: locally anything (a rename is all or nothing); at a
    URL a Zarr group's root metadata (copied last by _move)."""
    return exists(place) if _remote(place) is None else _is_file(place, ROOT)


# -- what is there, and may it be replaced


def made_by(path: Place) -> str | None:
    """What vidlat output `path` is (see the module docstring), or None."""
    path = _place(path)
    if _is_file(path, "checkpoints/latest"):
        return "run"
    if _is_file(path, GENERATED):
        return "generate"
    try:
        block = json.loads(_read(path, ROOT) or b"{}").get("attributes", {}).get("vidlat")
    except (ValueError, AttributeError):
        return None
    return block.get("kind") if isinstance(block, dict) else None


def local_folder(out: Place, what: str) -> Path:
    """`out` as a local folder (a file:// URL as the folder it names); ConfigError for another
    fsspec URL: only a latent store may live on object storage, `what` (e.g. "a video dataset")
    is read back from local folders only."""
    place = _place(out)
    if _remote(place):
        raise ConfigError(
            f"--out {out}: {what} is written to a local folder; only a latent store "
            "(vidlat encode --out) may be an fsspec URL"
        )
    return place


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents


def refuse_overlap(out: Place, inputs: Mapping[str, Path | str | None]) -> None:
    """ConfigError when `out` is one of `inputs` ({flag: path}), lies inside it, or contains it.
    Inputs are local; an output at a (non-file://) URL cannot overlap them."""
    place = _place(out)
    if _remote(place):
        return
    target = place.resolve()
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


def check_writable(out: Place) -> None:
    """StoreError when `out` (or the nearest folder above it that exists) is a file or cannot be
    written: said before any work starts, not as a traceback after it. At a URL only a file is
    refused: an object store says whether it may be written only when it is."""
    out = _place(out)
    if remote := _remote(out):
        if remote[0].isfile(remote[1]):
            raise StoreError(f"--out {out} is a file, not a folder; choose another --out")
        return
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if parent.is_file():
        raise StoreError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"--out {out}: {parent} is not writable; choose another --out")


def check_place(out: Place, kind: str, overwrite: bool, resumable: bool = False) -> bool:
    """Whether `out` exists and will be replaced. Refuses (StoreError): a file, a folder that is
    not writable, an existing non-empty folder without `overwrite` (unless `resumable` and of
    `kind`: the command continues it), and with it one that is not `kind` (overwrite replaces
    only what the same command made)."""
    out = _place(out)
    clear_stale(out)
    check_writable(out)
    if not holds_something(out):
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


# -- write beside, then swap in


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())  # no '.': PID.HOST splits once


def _owner(place: Place) -> str:
    """This process as it names its siblings of `place`: PID, or PID.HOST at a URL."""
    return str(os.getpid()) if _remote(place) is None else f"{os.getpid()}.{_host()}"


def beside(out: Place) -> Place:
    """Where a new result for `out` is written before it is swapped in (same folder, same disk)."""
    out = _place(out)
    return _sibling(out, f".{_name(out)}.new-{_owner(out)}")


def swap_in(new: Place, out: Place) -> Place:
    """Put the complete result `new` at `out`, then delete the old one; a kill in between leaves
    the old one under `.NAME.old-OWNER`, which clear_stale restores."""
    out = _place(out)
    old = _sibling(out, f".{_name(out)}.old-{_owner(out)}")
    if exists(out):
        _move(out, old)
    _move(_place(new), out)
    discard(old)
    return out


def publish(new: Place, out: Place) -> bool:
    """Move the complete `new` to `out` unless something appeared there meanwhile (another
    process published first): then `new` is dropped and False returned."""
    new, out = _place(new), _place(out)
    if _remote(out) is None:
        try:
            os.rename(new, out)  # atomic; refused when `out` is a non-empty folder
        except OSError:
            if not holds_something(out):
                raise
            discard(new)
            return False
        return True
    # No atomic rename at a URL: a publisher that starts within this check of another's may
    # copy over it; both write a store of the same encode, so the rerun resumes either.
    if holds_something(out):
        discard(new)
        return False
    _move(new, out)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead(owner: str) -> bool:
    """Whether the process that owns a sibling is gone: a PID of this machine that has ended. A
    sibling of another machine's process is never taken for dead."""
    pid, _, host = owner.partition(".")
    if host and host != _host():
        return False
    return pid.isdigit() and not _alive(int(pid))


def _siblings(out: Place) -> list[tuple[str, str, Place]]:
    """(kind "new"/"old", owner, place) of every sibling `.NAME.{new,old}-OWNER` of `out`."""
    if remote := _remote(out):
        fs, path = remote
        parent = path.rpartition("/")[0] or fs.root_marker
        try:
            names = [p.rstrip("/").rpartition("/")[2] for p in fs.ls(parent, detail=False)]
        except FileNotFoundError:  # nothing written under that prefix yet
            return []
    elif out.parent.is_dir():
        names = [p.name for p in out.parent.iterdir()]
    else:
        return []
    pattern = re.compile(rf"\.{re.escape(_name(out))}\.(new|old)-(.+)")
    found = [(m[1], m[2], _sibling(out, name)) for name in names if (m := pattern.fullmatch(name))]
    return sorted(found, key=lambda s: s[0] != "old")  # an old result is put back first


def clear_stale(out: Place) -> None:
    """Remove results left half-written beside `out` by dead processes; restore an old result a
    kill left moved aside (its replacement had not yet been swapped in whole)."""
    out = _place(out)
    if _remote(out) is None and not out.parent.is_dir():
        return
    for kind, owner, path in _siblings(out):
        if not _dead(owner):
            continue
        if kind == "old" and not _whole(out):
            discard(out)  # at a URL: a copy of the new result cut short; locally nothing
            if _whole(path):
                _move(path, out)
                continue
        elif kind == "new" and exists(out) and not _whole(out):
            discard(out)  # at a URL: a publish of this new result cut short
        discard(path)
