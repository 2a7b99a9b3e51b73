"""Nets of the hierarchical model (main paper §3.2, appendix A.1): background VAE parts, the grid
detector (cell proposals with presence, non-maximum suppression), CoordConv encoder and AIR's
recurrent detector, Spatial Transformer crop/paste, Spatial Broadcast Decoder, the composition of
eq. 3, and the two discriminators.

Axis order: frames (B, C, H, W); per-slot tensors (B, N, ...) with N object slots; glimpses
(B, N, C, g, g). z_where = (x, y, size_x, size_y): the glimpse centre in normalised image
coordinates [-1, 1] (x right, y down) and its side as a fraction of the image side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidlat.errors import ConfigError
from vidlat.stages.common.losses import reparameterize
from vidlat.stages.common.nets import ConvEncoder, block_widths

MIN_GLIMPSE = 8
MIN_SIZE = 1e-2  # smallest glimpse side a decoded z_where is clamped to (its inverse is pasted)


def coord_grid(size: int) -> torch.Tensor:
    """(1, 2, size, size): x and y of each pixel centre in [-1, 1] (CoordConv's extra channels)."""
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x, y])[None]


class CoordConvEncoder(nn.Module):
    """E of §3.2.2: (B, c_in, S, S) -> h (B, out_dim). CoordConv (Liu et al. 2018): two coordinate
    channels are concatenated to the input ("AddCoords" before the first convolution, their usual
    placement), then the DCGAN encoder of nets.py."""

    def __init__(self, c_in: int, image_size: int, out_dim: int, width: int):
        super().__init__()
        self.net = ConvEncoder(c_in + 2, image_size, out_dim, width)
        self.register_buffer("coords", coord_grid(image_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coords = self.coords.expand(x.shape[0], -1, -1, -1).to(x.dtype)  # (B, 2, S, S)
        return self.net(torch.cat([x, coords], dim=1))  # (B, out_dim)


class GaussianEncoder(nn.Module):
    """(B, C, S, S) -> (mu, logvar), each (B, dim): a DCGAN conv encoder (stride-2 blocks to 4x4,
    a 4x4 valid conv) for any power-of-two S >= 8, so 8x8 glimpses (32x32 frames) work too."""

    def __init__(self, channels: int, size: int, dim: int, width: int):
        super().__init__()
        check_glimpse(size, size)
        widths = [width * min(2**i, 8) for i in range(int(math.log2(size)) - 2)]
        layers: list[nn.Module] = []
        for a, b in zip([channels, *widths[:-1]], widths, strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[-1], 2 * dim, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.head(self.body(x)).flatten(1)  # (B, 2 * dim)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)  # clamped: exp() stays finite in fp16


def check_glimpse(glimpse: int, image_size: int) -> None:
    """ConfigError unless a glimpse side is a power of two in [8, image_size] (convs halve it)."""
    if glimpse < MIN_GLIMPSE or glimpse & (glimpse - 1) or glimpse > image_size:
        raise ConfigError(
            f"glimpse_size {glimpse} must be a power of two in [{MIN_GLIMPSE}, image size "
            f"{image_size}]; leave it unset for image_size / 4"
        )


def where_from_raw(raw: torch.Tensor, size_range: tuple[float, float]) -> torch.Tensor:
    """Unbounded detector output (..., 4) -> z_where (..., 4): centre tanh(.) in (-1, 1), side
    lo + (hi - lo) * sigmoid(.), so every glimpse stays a usable window."""
    lo, hi = size_range
    centre, side = raw.float().split(2, dim=-1)
    return torch.cat([torch.tanh(centre), lo + (hi - lo) * torch.sigmoid(side)], dim=-1)


class Detector(nn.Module):
    """AIR's recurrent inference network (Eslami et al. 2016): an LSTM run for N steps on the image
    feature h, each step emitting q(z_where^i) = N(mu, sigma^2) over the unbounded pre-image of
    z_where. AIR feeds back the previous step's z_where, z_what and z_pres; we feed back z_where
    only (no z_pres: emptiness is the mask's job here), so that all N glimpses can be encoded and
    decoded at once after the N sequential steps."""

    def __init__(
        self,
        feature_dim: int,
        hidden: int,
        slots: int,
        size_range: tuple[float, float],
        logvar_init: float = -1.0,
    ):
        super().__init__()
        self.slots, self.size_range = slots, size_range
        self.cell = nn.LSTMCell(feature_dim + 4, hidden)
        self.head = nn.Linear(hidden, 8)
        nn.init.constant_(self.head.bias[4:], logvar_init)  # q(z_where)'s initial log-variance

    def forward(self, h: torch.Tensor, sample: bool) -> tuple[torch.Tensor, ...]:
        """h (B, F) -> mu, logvar of the pre-image and z_where, each (B, N, 4)."""
        state = (h.new_zeros(h.shape[0], self.cell.hidden_size),) * 2
        where = h.new_zeros(h.shape[0], 4)
        mus, logvars, wheres = [], [], []
        for _ in range(self.slots):  # the only sequential part of the model
            state = self.cell(torch.cat([h, where.to(h.dtype)], dim=1), state)
            mu, logvar = self.head(state[0]).float().chunk(2, dim=1)  # (B, 4) each
            logvar = logvar.clamp(-10.0, 10.0)
            raw = reparameterize(mu, logvar) if sample else mu
            where = where_from_raw(raw, self.size_range)
            mus, logvars, wheres = mus + [mu], logvars + [logvar], wheres + [where]
        return torch.stack(mus, 1), torch.stack(logvars, 1), torch.stack(wheres, 1)


def gumbel_noise(like: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel samples shaped like `like`: -log(-log(U)), U ~ U(0, 1)."""
    u = torch.rand_like(like).clamp(1e-9, 1 - 1e-9)
    return -torch.log(-torch.log(u))


class GridDetector(nn.Module):
    """A spatial proposal detector (SPACE, Lin et al. 2020, keeping N of its cells): a CoordConv
    net on [x, x - background] down to a G x G map of cells; each cell proposes an object with a
    presence logit and q(z_where) = N(mu, sigma^2) over the pre-image of its window: the centre
    is the cell's centre plus up to one cell's side (tanh), the side is `object_scale` times a
    factor in [1/scale_ratio, scale_ratio] (tanh in log space). The N slots are the N cells of
    highest presence, in that order (in training with Gumbel noise added to the logits, i.e. N
    cells drawn without replacement by softmax(logits), so every cell gets tried); the
    selection is an index, the selected values carry the gradients.

    Unlike AIR's LSTM (Detector), every window here depends on what the image holds at its place,
    so slots cannot coincide at initialisation, and presence is an explicit probability."""

    def __init__(
        self,
        c_in: int,
        image_size: int,
        cells: int,
        width: int,
        slots: int,
        object_scale: float,
        scale_ratio: float,
        logvar_init: float,
        nms_radius: float = 0.0,
    ):
        super().__init__()
        if cells < 1 or cells & (cells - 1) or cells > image_size // 2:
            raise ConfigError(
                f"grid_cells {cells} must be a power of two <= image size / 2 ({image_size // 2})"
            )
        if slots > cells * cells:
            raise ConfigError(f"slots {slots} exceed the detector's {cells}x{cells} cells")
        depth = int(math.log2(image_size // cells))
        widths = [width * min(2**i, 8) for i in range(depth)]
        layers: list[nn.Module] = []
        for a, b in zip([c_in + 2, *widths[:-1]], widths, strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2)]
        layers += [nn.Conv2d(widths[-1], widths[-1], 3, 1, 1), nn.LeakyReLU(0.2)]  # context
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[-1], 9, 1)  # presence logit, mu (4), logvar (4)
        nn.init.zeros_(self.head.weight)  # every cell starts at the prior: centred, object_scale
        nn.init.zeros_(self.head.bias)
        nn.init.constant_(self.head.bias[5:], logvar_init)
        self.slots, self.cells = slots, cells
        self.object_scale, self.log_ratio = object_scale, math.log(scale_ratio)
        self.nms_radius = 2.0 * nms_radius  # in normalised coordinates (the frame spans 2)
        self.register_buffer("coords", coord_grid(image_size), persistent=False)
        self.register_buffer("centres", coord_grid(cells).flatten(2)[0].T, persistent=False)

    def where(self, raw: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Pre-image (..., 4) of the windows of cells `cell` (...,) int -> z_where (..., 4)."""
        raw = raw.float()
        centre = self.centres[cell] + torch.tanh(raw[..., :2]) * (2.0 / self.cells)
        side = self.object_scale * torch.exp(self.log_ratio * torch.tanh(raw[..., 2:]))
        return torch.cat([centre, side], dim=-1)

    def forward(self, x: torch.Tensor, sample: bool) -> tuple[torch.Tensor, ...]:
        """x (B, c_in, S, S) -> mu, logvar of the pre-image and z_where (B, N, 4), presence
        logits (B, N), and the chosen cells (B, N) int64 (row-major over the G x G map)."""
        coords = self.coords.expand(x.shape[0], -1, -1, -1).to(x.dtype)
        out = self.head(self.body(torch.cat([x, coords], dim=1))).float().flatten(2)  # (B, 9, G²)
        logits, mu, logvar = out[:, 0], out[:, 1:5], out[:, 5:].clamp(-10.0, 10.0)
        score = logits.detach()
        if sample:  # Gumbel top-k: N cells without replacement, by softmax(logits)
            score = score + gumbel_noise(score)
        every = torch.arange(score.shape[1], device=score.device)
        centres = self.where(mu.detach().transpose(1, 2), every)[..., :2]  # (B, G², 2)
        cell = self.select(score, centres)  # (B, N)
        logits = logits.gather(1, cell)
        mu = mu.gather(2, cell[:, None].expand(-1, 4, -1)).transpose(1, 2)  # (B, N, 4)
        logvar = logvar.gather(2, cell[:, None].expand(-1, 4, -1)).transpose(1, 2)
        raw = reparameterize(mu, logvar) if sample else mu
        return mu, logvar, self.where(raw, cell), logits, cell

    def select(self, score: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """The N cells of highest score (B, G²), greedily skipping any cell whose proposed window
        centre (B, G², 2) lies within nms_radius of one already taken (non-maximum suppression:
        two slots never explain one object); when fewer than N are left, the best skipped ones.
        -> (B, N) int64, in the order taken."""
        if self.nms_radius <= 0:
            return score.topk(self.slots, dim=1).indices
        score, taken = score.clone(), []
        free = torch.ones_like(score, dtype=torch.bool)
        for _ in range(self.slots):
            masked = torch.where(free, score, score - 1e6)  # suppressed cells only as a last resort
            best = masked.argmax(dim=1)  # (B,)
            taken.append(best)
            score.scatter_(1, best[:, None], -float("inf"))
            at = centres.gather(1, best[:, None, None].expand(-1, 1, 2))  # (B, 1, 2)
            free &= (centres - at).norm(dim=-1) > self.nms_radius
        return torch.stack(taken, dim=1)


# -- Spatial Transformer (Jaderberg et al. 2015): affine_grid/grid_sample. align_corners=False
# everywhere: -1 and 1 are the outer edges of the border pixels, so a window means the same region
# at every resolution and crop and paste are exact inverses of each other in continuous coordinates.


def _theta(where: torch.Tensor, inverse: bool) -> torch.Tensor:
    """z_where (M, 4) -> affine (M, 2, 3) mapping glimpse coordinates to image coordinates
    (crop), or image to glimpse coordinates (inverse, for pasting)."""
    x, y, sx, sy = where.float().unbind(-1)
    if inverse:
        sx, sy = sx.clamp(min=MIN_SIZE), sy.clamp(min=MIN_SIZE)
        x, y, sx, sy = -x / sx, -y / sy, 1 / sx, 1 / sy
    zero = torch.zeros_like(x)
    return torch.stack([sx, zero, x, zero, sy, y], dim=-1).reshape(-1, 2, 3)


def crop(images: torch.Tensor, where: torch.Tensor, size: int) -> torch.Tensor:
    """images (B, C, H, W), z_where (B, N, 4) -> glimpses (B, N, C, size, size), bilinear, zeros
    outside the image. All N windows are sampled in one grid_sample, without copying the image."""
    b, n = where.shape[:2]
    theta = _theta(where.reshape(b * n, 4), inverse=False)
    grid = F.affine_grid(theta, [b * n, 1, size, size], align_corners=False)  # (BN, g, g, 2)
    grid = grid.reshape(b, n * size, size, 2).to(images.dtype)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(b, -1, n, size, size).transpose(1, 2)  # (B, N, C, g, g)


def paste(glimpses: torch.Tensor, where: torch.Tensor, image_size: int) -> torch.Tensor:
    """glimpses (B, N, K, g, g), z_where (B, N, 4) -> (B, N, K, S, S) float32: each glimpse put
    back at its window with the inverse transform, zeros outside it."""
    b, n, k, g, _ = glimpses.shape
    theta = _theta(where.reshape(b * n, 4), inverse=True)
    grid = F.affine_grid(theta, [b * n, k, image_size, image_size], align_corners=False)
    src = glimpses.reshape(b * n, k, g, g).float()
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(b, n, k, image_size, image_size)


def compose(
    background: torch.Tensor, objects: torch.Tensor, masks: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 3: x = (1 - sum_i m_i) * background + sum_i m_i * y_i, float32.

    background (B, C, H, W), objects y_i (B, N, C, H, W), masks (B, N, 1, H, W) in [0, 1].
    Eq. 3 is a convex combination only when sum_i m_i <= 1, which the paper leaves open; we
    composite front to back ("over"): m_i is seen through the slots before it, m_i times
    prod_{j<i}(1 - m_j). Each weight stays in [0, 1], their sum is 1 - prod_i(1 - m_i) <= 1, and
    eq. 3 holds as written wherever masks do not overlap.
    Returns the frame (B, C, H, W) and those weights (B, N, 1, H, W).
    """
    masks = masks.float()
    through = torch.cumprod(1 - masks, dim=1)  # (B, N, 1, H, W): uncovered after slot i
    before = torch.cat([torch.ones_like(through[:, :1]), through[:, :-1]], dim=1)
    weights = masks * before
    frame = through[:, -1] * background.float() + (weights * objects.float()).sum(1)
    return frame, weights


class SpatialBroadcastDecoder(nn.Module):
    """D_obj of §3.2.2 (Watters et al. 2019): z (M, D) tiled over a (g+2L)x(g+2L) grid with x, y
    coordinate channels, L 3x3 valid convolutions with ReLU (their 4 x 64), a 1x1 conv to C+1
    channels. -> RGB glimpse (M, C, g, g) and mask (M, 1, g, g), both sigmoids in [0, 1]."""

    def __init__(self, in_dim: int, channels: int, size: int, width: int, layers: int = 4):
        super().__init__()
        self.channels, self.grid = channels, size + 2 * layers
        convs: list[nn.Module] = []
        for i in range(layers):
            convs += [nn.Conv2d(in_dim + 2 if i == 0 else width, width, 3), nn.ReLU()]
        self.body = nn.Sequential(*convs)
        self.out = nn.Conv2d(width, channels + 1, 1)
        self.register_buffer("coords", coord_grid(self.grid), persistent=False)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, s = z.shape[0], self.grid
        tiled = z[:, :, None, None].expand(-1, -1, s, s)  # (M, D, s, s)
        coords = self.coords.expand(m, -1, -1, -1).to(z.dtype)  # (M, 2, s, s)
        h = self.body(torch.cat([tiled, coords], dim=1))  # (M, width, g, g): valid convs
        out = torch.sigmoid(self.out(h))  # (M, C+1, g, g)
        return out[:, : self.channels], out[:, self.channels :]


class ImageDiscriminator(nn.Module):
    """Whole-frame discriminator for the image adversarial loss: (B, C, S, S) -> logits (B,).
    DCGAN layout (stride-2 4x4 convs, LeakyReLU 0.2, to 4x4, then a 4x4 valid conv) without any
    normalisation: Mescheder et al. 2018 train their R1-regularised critics without it, and
    BatchNorm would make the gradient penalty depend on the rest of the batch."""

    def __init__(self, channels: int, image_size: int, width: int):
        super().__init__()
        widths = block_widths(image_size, width)
        layers: list[nn.Module] = []
        for a, b in zip([channels, *widths[:-1]], widths, strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[-1], 1, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).flatten()  # (B,)
