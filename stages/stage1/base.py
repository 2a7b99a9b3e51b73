"""The stage-1 interface: frame autoencoders with latents split into roles; registry; loading.

A stage-1 model maps one frame (B, C, H, W) in [0, 1] to named latent fields, each with a role
(content, pose, where, mask; see vidlat.store.format) and back. `vidlat encode` stores the fields,
stage 2 reads them by role, `generate` decodes predicted ones; none of them knows the model class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from vidlat.config import Config
from vidlat.stages.common.distributed import direct
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

    @property
    def needs_neighbour(self) -> bool:
        """Whether train_step reads x_t1, the frame next to x_t (a temporal term on the latents)."""
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
        self,
        batch: dict[str, torch.Tensor],
        optimizers: dict[str, torch.optim.Optimizer],
        amp,
        run: Callable[..., Any] = direct,
    ) -> dict[str, torch.Tensor]:
        """One update of every optimiser on `batch`; returns detached scalar loss tensors (no host
        sync: the caller calls .item() only when it logs). `amp` is a common.runtime.Amp. Every
        pass whose backward an optimiser steps computes its loss through `run(fn, *args)`, so
        that under torchrun DistributedDataParallel averages that pass's gradients."""
        raise NotImplementedError

    def config_dict(self) -> dict[str, Any]:
        """The model config as plain JSON data (what a checkpoint stores)."""
        return self.config.model_dump(mode="json")
