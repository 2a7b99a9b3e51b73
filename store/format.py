"""Versioned on-disk formats: latent-store fields and roles, video arrays, the format check on open.

Both kinds of group carry one attribute
`vidlat` = {"kind": "latents"|"videos", "format_version": int, ...}.
Axis order everywhere: (V, T, [N,] D) for latents, (V, T, H, W, C) uint8 for videos.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import zarr
from zarr.codecs import BloscCodec

from vidlat.errors import StoreError

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)

# Roles a predictor reads by: `content` is time-invariant (held fixed), `pose` and `where` are
# predicted, `mask` is a per-slot presence value. `aux` arrays (slot permutations, ambiguity flags,
# ground-truth factors) sit beside the latents but are never fed to a predictor.
LATENT_ROLES = ("content", "pose", "where", "mask")
ROLES = (*LATENT_ROLES, "aux")
PREDICTED_ROLES = ("pose", "where")

KIND_LATENTS = "latents"
KIND_VIDEOS = "videos"
WRITTEN = "written"  # the per-chunk mask array of a latent store
FACTOR_PREFIX = "factor_"  # latent-store arrays copied from a dataset's ground-truth factors


@dataclass(frozen=True)
class FieldSpec:
    """One array of a latent store.

    shape: the per-frame shape after (V, T) when `per_frame`, e.g. (D,) or (N, D) or (N,);
    else the per-video shape after (V,). dtype: None means the store's latent dtype.
    """

    name: str
    role: str
    shape: tuple[int, ...]
    dtype: str | None = None
    per_frame: bool = True

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise StoreError(
                f"field {self.name!r} has role {self.role!r}; roles are {', '.join(ROLES)}"
            )
        if not self.name.isidentifier():
            raise StoreError(f"field name {self.name!r} must be a Python identifier")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FieldSpec:
        return cls(**{**data, "shape": tuple(data["shape"])})


def compressor(kind: str = "float") -> BloscCodec:
    """Blosc/Zstd: byte-shuffle suits float latents, bit-shuffle suits uint8 pixels."""
    shuffle = "bitshuffle" if kind == "uint8" else "shuffle"
    return BloscCodec(cname="zstd", clevel=5, shuffle=shuffle)


def vidlat_attrs(kind: str, **extra: Any) -> dict[str, Any]:
    """The `vidlat` attribute block that marks a group as ours, with its kind and format version."""
    return {"kind": kind, "format_version": FORMAT_VERSION, **extra}


def check_format(attrs: Mapping[str, Any], path: str, kind: str) -> dict[str, Any]:
    """Return the group's `vidlat` block after checking it is of `kind` and a supported version."""
    block = attrs.get("vidlat")
    if not isinstance(block, Mapping):
        raise StoreError(
            f"{path} is a Zarr group but not a vidlat {kind} store (no 'vidlat' attribute)"
        )
    if block.get("kind") != kind:
        raise StoreError(
            f"{path} holds vidlat {block.get('kind')!r}, but a {kind} store is needed here"
        )
    version = block.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise StoreError(
            f"{path} has format version {version}; this vidlat reads {SUPPORTED_VERSIONS}. "
            "Re-create it with this version (vidlat encode / vidlat data) or upgrade vidlat."
        )
    return dict(block)


# -- opening a latent store (shared by the reader and the writer)


def store_location(path: str | Path) -> str | Path:
    """A local folder as a Path; a string with '://' (an fsspec URL) goes to zarr as it is, but
    a file:// URL is the local folder it names (so it is written and swapped in as one)."""
    if isinstance(path, str) and "://" in path:
        import fsspec  # an fsspec URL: the filesystem comes with the user's fsspec install

        if fsspec.core.split_protocol(path)[0] in ("file", "local"):
            return Path(fsspec.core.url_to_fs(path)[1])
        return path
    return Path(path)


def store_exists(location: str | Path) -> bool:
    """Whether anything is at a local folder or an fsspec URL (s3://, memory://, ...)."""
    if isinstance(location, Path):
        return location.exists()
    import fsspec  # an fsspec URL: the filesystem comes with the user's fsspec install

    fs, path = fsspec.core.url_to_fs(location)
    return fs.exists(path)


def field_shape(spec: FieldSpec, n_videos: int, n_frames: int) -> tuple[int, ...]:
    """(V, T, *shape) for a per-frame field, (V, *shape) for a per-video one."""
    lead = (n_videos, n_frames) if spec.per_frame else (n_videos,)
    return (*lead, *spec.shape)


def field_dimension_names(spec: FieldSpec, slots: int | None) -> tuple[str, ...]:
    """Zarr v3 `dimension_names` of a field's array, so xarray can open the store.

    (video, time, ...) for a per-frame field, (video, ...) for a per-video one. The slot axis is
    named `slot` (shared by every per-slot field): a per-frame field's first axis after time when it
    has N entries and is followed by features, or is a mask or aux (perm) of N. The last axis of
    a field with features is `<name>_feature`, other axes `<name>_dim<i>`: sizes differ by field,
    and xarray needs one size per dimension name.
    """
    lead = ("video", "time") if spec.per_frame else ("video",)
    rest = [f"{spec.name}_dim{i}" for i in range(len(spec.shape))]
    if rest:
        rest[-1] = f"{spec.name}_feature"
    slotted = len(spec.shape) >= 2 or spec.role in ("mask", "aux")
    if spec.per_frame and slots and spec.shape and spec.shape[0] == slots and slotted:
        rest[0] = "slot"
    return (*lead, *rest)


def consolidate(location: str | Path) -> None:
    """Write consolidated metadata (every array's zarr.json in the root's), once a group is
    complete: xarray and other readers then open it with one read instead of one per array."""
    with warnings.catch_warnings():
        # zarr notes that consolidated metadata is not in the v3 spec yet; xarray reads it anyway.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(str(location))


def open_group_checked(location: str | Path, mode: str) -> zarr.Group:
    """Open the Zarr group at `location`, turning zarr's several failure types into a StoreError."""
    if isinstance(location, Path) and not location.exists():
        raise StoreError(f"{location} does not exist; create the latent store with vidlat encode")
    try:
        return zarr.open_group(str(location), mode=mode)
    except (FileNotFoundError, ValueError, zarr.errors.BaseZarrError):
        raise StoreError(
            f"{location} is not a Zarr group; a latent store is the folder written by vidlat encode"
        ) from None


def parse_block(
    group: zarr.Group, location: str | Path
) -> tuple[dict[str, Any], dict[str, FieldSpec]]:
    """Check format and layout of an opened store; returns (vidlat block, fields by name)."""
    block = check_format(group.attrs, str(location), KIND_LATENTS)
    fields = {d["name"]: FieldSpec.from_json(d) for d in block["fields"]}
    names = set(group.array_keys())
    for spec in fields.values():
        expected = field_shape(spec, block["n_videos"], block["n_frames"])
        if spec.name not in names or tuple(group[spec.name].shape) != expected:
            raise StoreError(
                f"{location} is damaged: array {spec.name!r} is missing or not shaped {expected}; "
                "re-create it with vidlat encode --overwrite"
            )
    if WRITTEN not in names:
        raise StoreError(
            f"{location} is damaged: no {WRITTEN!r} array; re-create it with --overwrite"
        )
    return block, fields
