"""Stage-2 predictors: LSTMs that roll pose latents forward with content held fixed, read by role.

A predictor never sees a stage-1 model, only the store's FieldSpecs. Fields of role `pose` or
`where` are predicted; `content` fields are held fixed; `mask` fields (per-slot presence) are held
fixed like content, at their last observed value, since presence does not move with pose. `aux`
fields are never fed. A field may be (D,) or (N, D) per frame: at every frame the pose fields are
normalised and flattened into one vector of size Dp, the held fields into one of size Dh, and the
output is split and reshaped back with the same specs, so every stage-1 model feeds every predictor.

Normalisation statistics (per-feature mean/std over the training split, and for `lstm-delta` the RMS
of frame-to-frame differences) are buffers of the module: they travel with its weights, and
`rollout` takes and returns latents in the store's own units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidlat.errors import DataError, StoreError
from vidlat.stages.common.distributed import direct
from vidlat.stages.stage2.configs import PredictorConfig
from vidlat.store.format import LATENT_ROLES, PREDICTED_ROLES, FieldSpec

HELD_ROLES = ("content", "mask")


@dataclass
class PredictorOutput:
    """What `forward` returns: the training loss and the normalised MSE over the future frames."""

    loss: Tensor  # scalar, the loss that is minimised
    future_mse: Tensor  # scalar, detached: MSE of normalised poses on frames past..T-1


def pose_l2_loss(pred: Tensor, target: Tensor) -> Tensor:
    """DRNET §3.1: plain ℓ2 between predicted and true pose vectors, (B, T, Dp) each."""
    return F.mse_loss(pred, target)


def delta_huber_loss(pred: Tensor, target: Tensor, delta: float) -> Tensor:
    """Main paper §3.3: Huber loss between predicted and true pose differences, (B, T, Dp) each."""
    return F.huber_loss(pred, target, delta=delta)


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape)


class LatentPredictor(nn.Module):
    """Shared parts: role split, per-frame flatten/unflatten, normalisation buffers, the LSTM core.

    Subclasses set `content_reduce` ('last' or 'mean' over the observed frames), `input_dim`,
    `unroll` and `loss`.
    """

    content_reduce: str = "last"

    def __init__(self, specs: Sequence[FieldSpec], cfg: PredictorConfig):
        super().__init__()
        latent = [s for s in specs if s.role in LATENT_ROLES]
        not_per_frame = [s.name for s in latent if not s.per_frame]
        if not_per_frame:
            raise StoreError(
                f"latent fields {not_per_frame} are stored once per video; predictors read "
                "per-frame latents (V, T, ...). Re-encode with a stage-1 model whose latent "
                "fields are per frame"
            )
        self.cfg = cfg
        self.fields = {s.name: s for s in latent}  # every field rollout needs and returns
        self.pose_names = [s.name for s in latent if s.role in PREDICTED_ROLES]
        self.held_names = [s.name for s in latent if s.role in HELD_ROLES]
        if not self.pose_names:
            raise StoreError(
                f"the store has no field with role {' or '.join(PREDICTED_ROLES)} (fields: "
                f"{sorted(self.fields)}); a predictor needs something to predict"
            )
        self.pose_dim = sum(_numel(self.fields[n].shape) for n in self.pose_names)
        self.held_dim = sum(_numel(self.fields[n].shape) for n in self.held_names)
        for spec in latent:  # per-feature (last axis) statistics, shared by the N slots
            self.register_buffer(f"mean_{spec.name}", torch.zeros(spec.shape[-1:]))
            self.register_buffer(f"std_{spec.name}", torch.ones(spec.shape[-1:]))
        width = cfg.hidden if cfg.embed else self.input_dim
        self.embed = nn.Linear(self.input_dim, cfg.hidden) if cfg.embed else nn.Identity()
        # dropout on the LSTM's input and between its layers (none on its output: the head reads
        # the pose step from it); parameter-free, so checkpoints without it load unchanged
        self.drop = nn.Dropout(cfg.dropout)
        between = cfg.dropout if cfg.layers > 1 else 0.0
        self.lstm = nn.LSTM(width, cfg.hidden, cfg.layers, batch_first=True, dropout=between)
        self.head = nn.Linear(cfg.hidden, self.pose_dim)

    @property
    def input_dim(self) -> int:
        raise NotImplementedError

    # Normalisation and the per-frame vector layout:

    def set_stats(self, mean: Mapping[str, np.ndarray], std: Mapping[str, np.ndarray]) -> None:
        """Per-feature mean and std, {field: (shape[-1],)}, from the training split."""
        for name in self.fields:
            getattr(self, f"mean_{name}").copy_(torch.as_tensor(mean[name]))
            getattr(self, f"std_{name}").copy_(torch.as_tensor(std[name]))

    def _norm(self, name: str, x: Tensor) -> Tensor:
        return (x.float() - getattr(self, f"mean_{name}")) / getattr(self, f"std_{name}")

    def flat_pose(self, batch: Mapping[str, Tensor]) -> Tensor:
        """{pose field: (B, T, *shape)} -> normalised (B, T, Dp), fields in store order."""
        return torch.cat([self._norm(n, batch[n]).flatten(2) for n in self.pose_names], -1)

    def unflat_pose(self, pose: Tensor) -> dict[str, Tensor]:
        """Normalised (B, T, Dp) -> {pose field: (B, T, *shape)} in the store's units."""
        sizes = [_numel(self.fields[n].shape) for n in self.pose_names]
        out = {}
        for name, part in zip(self.pose_names, pose.split(sizes, -1), strict=True):
            x = part.reshape(*pose.shape[:2], *self.fields[name].shape)
            out[name] = x * getattr(self, f"std_{name}") + getattr(self, f"mean_{name}")
        return out

    def held_values(self, batch: Mapping[str, Tensor], past: int) -> dict[str, Tensor]:
        """The fixed value of each held field, {field: (B, *shape)}, from the first `past` frames.

        Content: its last observed value (DRNET) or the mean over the observed frames (main paper
        §3.3); mask: always the last observed value (a slot's presence is not averaged).
        """
        out = {}
        for name in self.held_names:
            x = batch[name][:, :past].float()
            mean = self.content_reduce == "mean" and self.fields[name].role == "content"
            out[name] = x.mean(1) if mean else x[:, -1]
        return out

    def flat_held(self, held: Mapping[str, Tensor], like: Tensor) -> Tensor:
        """{held field: (B, *shape)} -> normalised (B, Dh); (B, 0) when there are none."""
        parts = [self._norm(n, held[n]).flatten(1) for n in self.held_names]
        return torch.cat(parts, -1) if parts else like.new_zeros(like.shape[0], 0)

    # The recurrent core:

    def init_state(self, batch: int) -> tuple[Tensor, Tensor]:
        """Zero (h, c), each (layers, B, hidden), on the weights' device and dtype."""
        weight = self.head.weight
        shape = (self.cfg.layers, batch, self.cfg.hidden)
        return weight.new_zeros(shape), weight.new_zeros(shape)

    def core(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple]:
        """Inputs (B, T, input_dim) -> head outputs (B, T, Dp) and the new state."""
        h, state = self.lstm(self.drop(self.embed(x)), state)  # (B, T, hidden)
        return self.head(h), state

    def unroll(self, pose: Tensor, held: Tensor, extra: int) -> tuple[Tensor, Tensor]:
        """Feed the true normalised poses (B, T0, Dp), then `extra` own predictions.

        Returns (poses, outputs), each (B, T0 + extra, Dp): predicted normalised poses of frames
        1..T0+extra and the raw network outputs that the loss compares.
        """
        raise NotImplementedError

    def loss(self, outputs: Tensor, pose: Tensor) -> Tensor:
        """Loss of outputs (B, T-2, Dp), frames 2..T-1, against true normalised poses (B, T, Dp)."""
        raise NotImplementedError

    # Training and generation:

    def forward(
        self, window: Mapping[str, Tensor], past: int, force_future: bool = False
    ) -> PredictorOutput:
        """Loss on a window {field: (B, T, *shape)} whose first `past` frames are observed.

        Frames 0..past-1 are fed as they are (teacher forcing); over the future frames the model
        feeds back its own predictions, unless `force_future` (drnet-py's reference training feeds
        true poses at every frame). The prediction of frame 1 is left out of the loss: made from one
        frame, its velocity is unobservable, an irreducible error in both models.
        """
        pose = self.flat_pose(window)  # (B, T, Dp)
        t = pose.shape[1]
        if t < 3 or not 1 <= past < t:
            raise DataError(
                f"a training window needs >= 3 frames and 1 <= past < frames; got {t} frames, "
                f"past={past}"
            )
        held = self.flat_held(self.held_values(window, past), pose)  # (B, Dh)
        fed_pose = pose
        if self.training and self.cfg.input_noise > 0:  # targets stay the clean poses
            fed_pose = pose + self.cfg.input_noise * torch.randn_like(pose)
            held = held + self.cfg.input_noise * torch.randn_like(held)
        # DRNET's paper only says "trained with an l2 loss"; drnet-py's train_lstm.py feeds true
        # poses at all frames (force_future). By default we train as we generate instead, free
        # running over the future, so training sees the model's own compounding errors.
        fed = t - 1 if force_future else past
        poses, outputs = self.unroll(fed_pose[:, :fed], held, t - 1 - fed)  # (B, T-1, Dp) each
        loss = self.loss(outputs[:, 1:], pose)
        future_mse = F.mse_loss(poses[:, past - 1 :].detach(), pose[:, past:])
        return PredictorOutput(loss=loss, future_mse=future_mse)

    def make_optimizers(self, lr: float) -> dict[str, torch.optim.Optimizer]:
        """Named optimisers; "adam" minimises forward's loss (Adam betas 0.9, 0.999 as DRNET),
        with decoupled weight decay (AdamW) of cfg.weight_decay on the weights (not biases)."""
        decay = [p for n, p in self.named_parameters() if "weight" in n]
        rest = [p for n, p in self.named_parameters() if "weight" not in n]
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ]
        return {"adam": torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))}

    def extra_step(
        self, window: Mapping[str, Tensor], past: int, optimizers, amp, run=direct
    ) -> Tensor | None:
        """Updates outside forward's loss (an adversary's), after the main step; none here. Its
        pass runs through `run(fn, *args)` (see vidlat.stages.training.loop.StepContext)."""
        return None

    def rollout(self, past: Mapping[str, Tensor], future: int) -> dict[str, Tensor]:
        """Predict `future` frames (any length) after observed latents {field: (B, P, *shape)}.

        Returns every latent field as (B, future, *shape), float32: pose/where fields predicted,
        content and mask fields repeated at their held value.
        """
        missing = sorted(set(self.fields) - set(past))
        if missing:
            raise DataError(f"rollout needs fields {missing} too (all of {sorted(self.fields)})")
        pose = self.flat_pose(past)  # (B, P, Dp)
        b, p = pose.shape[:2]
        if future < 1 or p < 1:
            raise DataError(f"rollout needs >= 1 observed and future frame; got {p} and {future}")
        held_raw = self.held_values(past, p)
        poses, _ = self.unroll(pose, self.flat_held(held_raw, pose), future - 1)
        out = self.unflat_pose(poses[:, -future:])
        for name, value in held_raw.items():
            out[name] = value[:, None].expand(b, future, *value.shape[1:]).contiguous()
        return {name: out[name] for name in self.fields}  # store order
