"""The end-to-end pixel-space video predictor a user would train instead (for the benchmarks only).

A conventional deterministic predictor trained on pixels through the whole window with gradients,
as DRNET's encoder/decoder + LSTM would be if trained jointly (or SVG-LP without its latent
variables): every frame (B, T, C, H, W) goes through the conv encoder, an LSTM runs over the codes
(true codes over the observed frames, its own predictions after), the conv decoder draws each
predicted code, and the pixel MSE on the future frames is backpropagated through all of it. Sized
like the two-stage pipeline it is compared with: the same ConvEncoder/ConvDecoder widths and code
size as the DRNET stage 1, and the same LSTM as the stage-2 predictor. Not a product model: it
lives here so that `vidlat bench` can measure what vidlat saves against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidlat.stages.common.nets import ConvDecoder, ConvEncoder, dcgan_init


class PixelPredictor(nn.Module):
    """frames (B, T, C, S, S) in [0, 1] -> predicted frames (B, T - past, C, S, S)."""

    def __init__(self, channels: int, image: int, code: int, width: int, hidden: int, layers: int):
        super().__init__()
        self.encoder = ConvEncoder(channels, image, code, width)
        self.lstm = nn.LSTM(code, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, code)
        self.decoder = ConvDecoder(code, channels, image, width)
        self.apply(dcgan_init)

    def forward(self, frames: torch.Tensor, past: int) -> torch.Tensor:
        b, t = frames.shape[:2]
        codes = self.encoder(frames[:, :past].flatten(0, 1)).unflatten(0, (b, past))  # (B, P, D)
        out, state = self.lstm(codes)
        last = codes[:, -1:] + self.head(out[:, -1:])  # residual: the next code
        preds = [last]
        for _ in range(t - past - 1):  # autoregressive over the future frames
            out, state = self.lstm(last, state)
            last = last + self.head(out)
            preds.append(last)
        future = torch.cat(preds, 1)  # (B, F, D)
        return self.decoder(future.flatten(0, 1)).unflatten(0, (b, t - past))  # (B, F, C, S, S)

    def loss(self, frames: torch.Tensor, past: int) -> torch.Tensor:
        """Pixel MSE of the predicted future frames, the whole window backpropagated."""
        return F.mse_loss(self(frames, past), frames[:, past:])


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
