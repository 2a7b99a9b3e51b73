"""Versioned on-disk formats: latent-store fields and roles, video arrays, the format check on open.

Both kinds of group carry one attribute
`vidlat` = {"kind": "latents"|"videos", "format_version": int, ...}.
Axis order everywhere: (V, T, [N,] D) for latents, (V, T, H, W, C) uint8 for videos.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

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
