"""Shared nn blocks: DCGAN-style conv encoder and decoder, deep as the image size needs; an MLP.

Images are (B, C, S, S) float tensors with S a power of two >= 16; codes are (B, D) vectors. The
encoder halves S with stride-2 blocks down to a 4x4 map (S=64: 4 blocks, as in DCGAN), then a 4x4
convolution maps it to a 1x1 code; the decoder mirrors it (Radford et al., as DRNET sec. 4.1 uses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from vidlat.errors import ConfigError

MIN_SIZE = 16
MAX_WIDTH_MULT = 8  # DCGAN stops doubling the channels at 8x the first block's width


def conv_depth(image_size: int) -> int:
    """Stride-2 blocks taking `image_size` down to 4x4: 16 -> 2, 32 -> 3, 64 -> 4, 128 -> 5."""
    if image_size < MIN_SIZE or image_size & (image_size - 1):
        raise ConfigError(
            f"image size {image_size} is not a power of two >= {MIN_SIZE}; the conv nets halve it "
            "down to 4x4. Resize the videos (e.g. vidlat data import --size 64)"
        )
    return int(math.log2(image_size)) - 2


def block_widths(image_size: int, width: int) -> list[int]:
    """Channels after each stride-2 block: width, 2*width, 4*width, 8*width, 8*width, ..."""
    return [width * min(2**i, MAX_WIDTH_MULT) for i in range(conv_depth(image_size))]


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation (as drnet-py): conv weights N(0, 0.02), BatchNorm scales N(1, 0.02)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _down(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False: BatchNorm right after makes a conv bias redundant.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)
    )


def _up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.2),
    )


class ConvEncoder(nn.Module):
    """(B, C, S, S) -> (B, out_dim): stride-2 conv blocks (conv 4x4, BatchNorm, LeakyReLU 0.2) to a
    4x4 map, then a 4x4 valid convolution to the code; no norm or activation on the last layer."""

    def __init__(self, channels: int, image_size: int, out_dim: int, width: int = 64):
        super().__init__()
        widths = block_widths(image_size, width)
        ins = [channels, *widths[:-1]]
        self.body = nn.Sequential(*(_down(a, b) for a, b in zip(ins, widths, strict=True)))
        self.head = nn.Conv2d(widths[-1], out_dim, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)  # (B, widths[-1], 4, 4)
        return self.head(h).flatten(1)  # (B, out_dim)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The code (B, out_dim) and every block's output, finest first: (B, widths[i], S/2^(i+1),
        S/2^(i+1)) for i = 0..depth-1, the U-Net skips of a ConvDecoder(skips=True)."""
        maps = []
        h = x
        for block in self.body:
            h = block(h)
            maps.append(h)
        return self.head(h).flatten(1), maps


class ConvDecoder(nn.Module):
    """(B, in_dim) -> (B, C, S, S) in [0, 1]: the encoder mirrored, ending in a sigmoid.

    With `skips` (U-Net style, as drnet-py's dcgan_unet): each up-block also reads the matching
    block output of a ConvEncoder of the same widths (its `features`), concatenated on channels,
    so the input of the block at resolution r is [h_r, skip_r] with twice the channels."""

    def __init__(
        self, in_dim: int, channels: int, image_size: int, width: int = 64, skips: bool = False
    ):
        super().__init__()
        widths = block_widths(image_size, width)
        self.skips = skips
        grow = 2 if skips else 1
        self.stem = nn.Sequential(
            nn.ConvTranspose2d(in_dim, widths[-1], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[-1]),
            nn.LeakyReLU(0.2),
        )
        rev = widths[::-1]
        self.body = nn.Sequential(
            *(_up(grow * a, b) for a, b in zip(rev[:-1], rev[1:], strict=True))
        )
        self.out = nn.ConvTranspose2d(grow * widths[0], channels, 4, 2, 1)

    def forward(self, z: torch.Tensor, skips: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """z (B, in_dim); skips: the encoder's block outputs, finest first (needed iff `skips`)."""
        if self.skips != (skips is not None):
            raise ValueError("a ConvDecoder with skips needs the encoder's maps, one without none")
        h = self.stem(z[:, :, None, None])  # (B, widths[-1], 4, 4)
        rev = list(skips)[::-1] if skips is not None else [None] * (len(self.body) + 1)
        for block, skip in zip(self.body, rev[:-1], strict=True):
            h = block(h if skip is None else torch.cat([h, skip], 1))
        if rev[-1] is not None:  # (B, width, S/2, S/2) each
            h = torch.cat([h, rev[-1]], 1)
        return torch.sigmoid(self.out(h))  # (B, C, S, S)


class MLP(nn.Sequential):
    """(B, in_dim) -> (B, out_dim): Linear layers with `activation` between them (ReLU by
    default), none after the last. The one MLP of every critic, mapping net and probe."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ):
        dims = [in_dim, *hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            layers += [nn.Linear(a, b), activation()]
        super().__init__(*layers, nn.Linear(dims[-1], out_dim))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints of format 1 (before the MLPs were one class) hold "{prefix}net.N.weight"
        for key in [k for k in state_dict if k.startswith(prefix + "net.")]:
            state_dict[prefix + key[len(prefix) + 4 :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
