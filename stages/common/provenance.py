"""Provenance: which encoder and which videos a store or a stage-2 model came from, checked.

Every check of "was this made by that encoder from those videos" lives here, so encode, evaluate,
generate, inspect --verify and the unconditional path refuse a mismatch with the same facts: the
SHA-256 of the stage-1 weights (common.checkpoint.weights_hash) and the dataset's fingerprint.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vidlat.errors import CheckpointError, StoreError
from vidlat.stages.common.checkpoint import weights_hash


def store_origin(attrs: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(encoder hash, source fingerprint) recorded in a latent store's vidlat attributes."""
    return (attrs.get("encoder") or {}).get("hash"), (attrs.get("source") or {}).get("fingerprint")


def check_store(
    attrs: Mapping[str, Any], location: Any, ae_dir: str | Path, fingerprint: str | None, fix: str
) -> str:
    """StoreError unless the store at `location` (its vidlat attrs) was encoded by the weights in
    `ae_dir` from the videos of `fingerprint` (None: any videos); `fix` ends the message. Returns
    the encoder's hash."""
    digest = weights_hash(ae_dir)
    encoder, source = store_origin(attrs)
    if encoder != digest:
        raise StoreError(
            f"{location} was encoded by encoder {encoder}, but {ae_dir} holds encoder {digest}; "
            f"{fix}"
        )
    if fingerprint is not None and source != fingerprint:
        raise StoreError(
            f"{location} was encoded from data {source}, not from these videos ({fingerprint}); "
            f"{fix}"
        )
    return digest


def check_trained_on(ae_dir: str | Path, meta: Mapping[str, Any], what: str = "predictor") -> None:
    """Refuse a stage-2 model (its checkpoint meta) trained on latents of another encoder than the
    one in `ae_dir`, naming both hashes."""
    ours, theirs = weights_hash(ae_dir), meta.get("encoder_hash")
    if ours != theirs:
        raise CheckpointError(
            f"the {what} was trained on latents of encoder {theirs}, but {ae_dir} holds encoder "
            f"{ours}; use the stage-1 run whose store the {what} was trained on"
        )
