"""DRNET's forward model and the main paper's delta LSTM: deterministic latent predictors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from vidlat.stages.stage2.base import (
    LatentPredictor,
    PredictorConfig,
    delta_huber_loss,
    pose_l2_loss,
)
from vidlat.store.format import FieldSpec


class PoseLSTM(LatentPredictor):
    """DRNET's forward model (§3.1): [pose_{t-1}, content] -> pose_t, content from the last frame.

    The linear embedding before the LSTM and the linear output layer follow drnet-py's
    models/lstm.py; there is no tanh on the output since vidlat's poses are normalised, not bounded.
    """

    content_reduce = "last"

    @property
    def input_dim(self) -> int:
        return self.pose_dim + self.held_dim

    def unroll(self, pose: Tensor, held: Tensor, extra: int) -> tuple[Tensor, Tensor]:
        b, t0 = pose.shape[:2]
        fixed = held[:, None]  # (B, 1, Dh)
        x = torch.cat([pose, fixed.expand(b, t0, -1)], -1)  # (B, T0, Dp + Dh)
        out, state = self.core(x, self.init_state(b))  # one call over the observed frames
        preds = [out]
        last = out[:, -1:]  # (B, 1, Dp)
        for _ in range(extra):  # autoregressive: feed back the predicted pose
            last, state = self.core(torch.cat([last, fixed], -1), state)
            preds.append(last)
        poses = torch.cat(preds, 1)
        return poses, poses

    def loss(self, outputs: Tensor, pose: Tensor) -> Tensor:
        return pose_l2_loss(outputs, pose[:, 2:])


class DeltaLSTM(LatentPredictor):
    """Main paper §3.3: [mean content, pose_t, d_t] -> d̂_{t+1}; pose_{t+1} = pose_t + d̂_{t+1}.

    d_t = pose_t - pose_{t-1}, with d_0 = 0 at the first frame (so any number of observed frames
    works). Differences enter and leave the network divided by `delta_scale`, the training split's
    RMS difference per pose feature, so the Huber threshold is in units of a typical step.
    """

    content_reduce = "mean"

    def __init__(self, specs: Sequence[FieldSpec], cfg: PredictorConfig):
        super().__init__(specs, cfg)
        for name in self.pose_names:
            self.register_buffer(f"dscale_{name}", torch.ones(self.fields[name].shape[-1:]))

    @property
    def input_dim(self) -> int:
        return self.held_dim + 2 * self.pose_dim

    def set_delta_scale(self, scale: Mapping[str, np.ndarray]) -> None:
        """RMS frame-to-frame difference of each normalised pose feature, {field: (shape[-1],)}."""
        for name in self.pose_names:
            getattr(self, f"dscale_{name}").copy_(torch.as_tensor(scale[name]))

    def delta_scale(self) -> Tensor:
        """(Dp,) scale of each entry of the flat pose vector."""
        parts = [
            getattr(self, f"dscale_{n}").expand(self.fields[n].shape).flatten()
            for n in self.pose_names
        ]
        return torch.cat(parts)

    def unroll(self, pose: Tensor, held: Tensor, extra: int) -> tuple[Tensor, Tensor]:
        b, t0 = pose.shape[:2]
        scale = self.delta_scale()
        fixed = held[:, None]  # (B, 1, Dh)
        d = torch.diff(pose, dim=1, prepend=pose[:, :1]) / scale  # (B, T0, Dp), d_0 = 0
        x = torch.cat([fixed.expand(b, t0, -1), pose, d], -1)
        out, state = self.core(x, self.init_state(b))  # (B, T0, Dp): scaled d̂_1..d̂_T0
        outs = [out]
        poses = [pose + out * scale]  # pose_{t+1} = pose_t + d̂_{t+1}
        last_pose, last_d = poses[0][:, -1:], out[:, -1:]
        for _ in range(extra):  # autoregressive: feed back predicted pose and difference
            last_d, state = self.core(torch.cat([fixed, last_pose, last_d], -1), state)
            last_pose = last_pose + last_d * scale
            outs.append(last_d)
            poses.append(last_pose)
        return torch.cat(poses, 1), torch.cat(outs, 1)

    def loss(self, outputs: Tensor, pose: Tensor) -> Tensor:
        target = torch.diff(pose, dim=1)[:, 1:] / self.delta_scale()  # scaled d_2..d_{T-1}
        return delta_huber_loss(outputs, target, self.cfg.huber_delta)
