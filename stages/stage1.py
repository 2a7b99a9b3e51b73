"""The stage-1 interface: frame autoencoders with latents split into roles; registry; loading.

A stage-1 model maps one frame (B, C, H, W) in [0, 1] to named latent fields, each with a role
(content, pose, where, mask; see vidlat.store.format) and back. `vidlat encode` stores the fields,
stage 2 reads them by role, `generate` decodes predicted ones; none of them knows the model class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from vidlat.config import Config, format_validation_error
from vidlat.errors import CheckpointError, ConfigError
from vidlat.stages.checkpoint import load_checkpoint
from vidlat.store.format import FieldSpec

KIND = "stage1"  # meta["kind"] of a stage-1 checkpoint


class Stage1Model(nn.Module):
    """Base of the frame autoencoders. Subclasses set `name` and `config_class` and implement
    latent_fields, encode, decode, make_optimizers and train_step.

    Latents are deterministic functions of one frame: call `.eval()` before `encode` so BatchNorm
    uses its running statistics and a frame's latent does not depend on the rest of its batch.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[Config]]
    slots: ClassVar[int | None] = None  # object slots per frame (None: not a slot model)

    def __init__(self, config: Config, image_size: int, channels: int):
        super().__init__()
        self.config, self.image_size, self.channels = config, image_size, channels

    def latent_fields(self) -> list[FieldSpec]:
        """The latent fields encode() returns, with their role and per-frame shape."""
        raise NotImplementedError

    def store_fields(self) -> list[FieldSpec]:
        """What `vidlat encode` writes: the latent fields plus any aux arrays of postprocess."""
        return self.latent_fields()

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frames (B, C, H, W) in [0, 1] -> {field: (B, *shape)}."""
        raise NotImplementedError

    @property
    def needs_context(self) -> bool:
        """Whether decode needs `context` frames (a model with U-Net skips from a content frame)."""
        return False

    def decode(
        self, z: dict[str, torch.Tensor], context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """{field: (B, *shape)} -> frames (B, C, H, W) in [0, 1]. `context`: frames (B, C, H, W)
        (or (B, n, C, H, W)) in [0, 1] of the same videos, read by models that need_context only."""
        raise NotImplementedError

    def postprocess_latents(self, latents: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Whole-video fix-ups of encoded latents {field: (v, T, *shape)} (slot models align slots
        across frames here); the identity by default."""
        return latents

    def make_optimizers(self, lr: float | None = None) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers over disjoint parameter sets; `lr` overrides the model's default."""
        raise NotImplementedError

    def train_step(
        self, batch: dict[str, torch.Tensor], optimizers: dict[str, torch.optim.Optimizer], amp
    ) -> dict[str, torch.Tensor]:
        """One update of every optimiser on `batch`; returns detached scalar loss tensors (no host
        sync: the caller calls .item() only when it logs). `amp` is a vidlat.stages.runtime.Amp."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        """The model config as plain JSON data (what a checkpoint stores)."""
        return self.config.model_dump(mode="json")


# name -> class; filled by @register_stage1 when a model module is imported (the imports at the
# bottom of this file), and doubles as the CLI's --model choices.
STAGE1_MODELS: dict[str, type[Stage1Model]] = {}


def register_stage1(cls: type[Stage1Model]) -> type[Stage1Model]:
    """Class decorator adding a model to STAGE1_MODELS under its `name`."""
    STAGE1_MODELS[cls.name] = cls
    return cls


def model_class(name: str) -> type[Stage1Model]:
    if name not in STAGE1_MODELS:
        raise ConfigError(
            f"stage-1 model {name!r} is unknown; choose one of {', '.join(sorted(STAGE1_MODELS))}"
        )
    return STAGE1_MODELS[name]


def resolve_model_config(name: str, config: dict[str, Any] | None) -> Config:
    """Validate model settings into the model's config class (defaults filled in)."""
    cls = model_class(name)
    try:
        return cls.config_class.model_validate(config or {})
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(cls.config_class, exc, f"{name} model settings")
        ) from None


def build_stage1(
    name: str, config: dict[str, Any] | None, image_size: int, channels: int
) -> Stage1Model:
    """A freshly initialised model `name` for square frames of `image_size` with `channels`."""
    return model_class(name)(resolve_model_config(name, config), image_size, channels)


def load_stage1(
    ae_dir: str | Path, device: torch.device | str = "cpu"
) -> tuple[Stage1Model, dict[str, Any]]:
    """The model of a train-ae run folder's latest checkpoint, on `device`, in eval mode, and the
    checkpoint's meta (kind, model, config, image_size, channels, dataset_fingerprint, ...)."""
    ckpt = load_checkpoint(ae_dir, optimizers=False)
    meta = ckpt.meta
    if meta.get("kind") != KIND:
        raise CheckpointError(
            f"{ae_dir} holds a {meta.get('kind')!r} checkpoint, not a stage-1 autoencoder; "
            "pass the --out folder of vidlat train-ae"
        )
    # keys missing from an older checkpoint's config mean that version's behaviour, not today's
    upgrade = getattr(model_class(meta["model"]).config_class, "upgrade_stored", None)
    config = upgrade(dict(meta["config"] or {})) if upgrade else meta["config"]
    model = build_stage1(meta["model"], config, meta["image_size"], meta["channels"])
    try:
        model.load_state_dict(ckpt.module_state("model"))
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {ckpt.path} do not fit {meta['model']}: {exc}") from None
    return model.to(device).eval(), meta


# Model modules register themselves on import; imported last because they subclass Stage1Model.
from vidlat.stages import drnet as _drnet  # noqa: E402, F401
from vidlat.stages import hierarchical as _hierarchical  # noqa: E402, F401
