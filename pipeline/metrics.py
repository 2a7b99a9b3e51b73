"""Prediction-quality metrics per frame: MSE, PSNR and SSIM on channels-last frames in [0, 1].

Conventions (promised to users; `metrics.json` of `vidlat generate` uses them):

- Inputs are float frames in [0, 1] shaped (..., H, W, C), channels last like vidlat's videos
  (V, T, H, W, C). Every metric returns one value per frame, leading dims kept: shape (...).
- MSE is the mean of (pred - target)^2 over H, W and C.
- PSNR = 10 log10(data_range^2 / MSE) per frame, with MSE floored at 1e-10 so identical frames give
  a finite value: 100 dB for data_range=1.
- SSIM follows Wang et al. 2004 as in the common reference implementation, skimage's
  `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=1)`: a normalized Gaussian window of sigma 1.5 truncated at radius
  int(3.5 * 1.5 + 0.5) = 5 (11x11), K1 = 0.01, K2 = 0.03, C1 = (K1 L)^2, C2 = (K2 L)^2,
  population (not sample) variances, local statistics only where the window fits inside the frame
  ('valid' filtering, the same values skimage keeps after cropping a border of 5), the SSIM map
  averaged per channel, then over channels. Frames smaller than 11x11 raise DataError.
- MSE and PSNR run in float64. SSIM filters in float32 with the separable window (two band-matrix
  products per frame, one per axis), on frames centred by their per-channel mean so that
  E[x^2] - E[x]^2 does not cancel (uncentred float32 loses ~1e-5 on bright flat frames); it stays
  within 2e-7 of a float64 11x11 convolution (tests/test_metrics.py keeps that one as a reference).
  Results come back in the input's float dtype (at least float32), on the input's device.
- `per_step_metrics` averages each metric over the videos of a step (so the PSNR of a step is the
  mean of per-frame PSNRs, not the PSNR of the mean MSE), and "mean" averages the steps.
"""

from __future__ import annotations

import numpy as np
import torch

from vidlat.errors import DataError

SSIM_SIGMA = 1.5
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)  # skimage/scipy truncate=3.5 -> 5
SSIM_WINDOW = 2 * SSIM_RADIUS + 1  # 11
SSIM_K1, SSIM_K2 = 0.01, 0.03
MSE_FLOOR = 1e-10  # PSNR of identical frames: 10 log10(1 / 1e-10) = 100 dB
# Frames per filtering call are chosen so its float32 moments stay under 2**25 elements (128 MiB).
SSIM_CHUNK_ELEMENTS = 2**25


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """DataError unless both are float tensors of one shape (..., H, W, C)."""
    if pred.shape != target.shape:
        raise DataError(
            f"prediction shape {tuple(pred.shape)} differs from target shape "
            f"{tuple(target.shape)}; compare frames of the same size, channels last (..., H, W, C)"
        )
    if pred.ndim < 3:
        raise DataError(
            f"frames need shape (..., H, W, C), got {tuple(pred.shape)}; add a channel axis"
        )
    if not (pred.is_floating_point() and target.is_floating_point()):
        raise DataError(
            f"metrics need float frames in [0, 1], got {pred.dtype} and {target.dtype}; "
            "divide uint8 frames by 255 (or use per_step_metrics, which does)"
        )


def _result_dtype(x: torch.Tensor) -> torch.dtype:
    """The input's float dtype, but never below float32 (float16 cannot hold 100 dB finely)."""
    return torch.promote_types(x.dtype, torch.float32)


def _mse64(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Checked float64 MSE per frame: (..., H, W, C) x2 -> (...)."""
    _check_pair(pred, target)
    return (pred.double() - target.double()).square().mean(dim=(-3, -2, -1))


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per frame: float (..., H, W, C) x2 -> (...)."""
    return _mse64(pred, target).to(_result_dtype(pred))


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per frame: float (..., H, W, C) x2 -> (...).

    MSE is floored at 1e-10, so identical frames give 10 log10(data_range^2 / 1e-10) (100 dB at 1).
    """
    err = _mse64(pred, target).clamp_min(MSE_FLOOR)
    return (10.0 * torch.log10(data_range**2 / err)).to(_result_dtype(pred))


def gaussian_window(device: torch.device | None = None) -> torch.Tensor:
    """The 1-D SSIM window: float64 (11,), sigma 1.5, summing to 1 (as scipy's gaussian_filter).

    The 2-D window is its outer product with itself, so filtering is separable.
    """
    x = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64, device=device)
    g = torch.exp(-0.5 * (x / SSIM_SIGMA) ** 2)
    return g / g.sum()


def _band(n: int, device: torch.device) -> torch.Tensor:
    """'Valid' filtering along an axis of length n as a float32 (n - 10, n) band matrix."""
    g = gaussian_window(device).float()
    out = n - 2 * SSIM_RADIUS
    band = torch.zeros(out, n, dtype=torch.float32, device=device)
    rows = torch.arange(out, device=device)[:, None]
    cols = rows + torch.arange(SSIM_WINDOW, device=device)[None, :]  # (out, 11)
    band[rows, cols] = g
    return band


def _ssim_frames(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """SSIM of float32 frames (N, H, W, C) x2 -> (N,); two matmuls filter all local moments."""
    n, h, w, c = x.shape
    h2, w2 = h - 2 * SSIM_RADIUS, w - 2 * SSIM_RADIUS
    # Centre each frame's channel: variances and covariance are shift-invariant, and small
    # moments keep float32's E[x^2] - E[x]^2 from cancelling. The means come back for luminance.
    mean_x, mean_y = x.mean(dim=(1, 2), keepdim=True), y.mean(dim=(1, 2), keepdim=True)
    x, y = x - mean_x, y - mean_y
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=-1)  # (N, H, W, 5C)
    rows = _band(h, x.device) @ moments.reshape(n, h, w * 5 * c)  # along H: (N, H', W*5C)
    both = _band(w, x.device) @ rows.reshape(n * h2, w, 5 * c)  # along W: (N*H', W', 5C)
    mu_x, mu_y, e_xx, e_yy, e_xy = both.reshape(n, h2, w2, 5 * c).split(c, dim=-1)
    var_x = e_xx - mu_x * mu_x  # population variances, as use_sample_covariance=False
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    mu_x, mu_y = mu_x + mean_x, mu_y + mean_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    # Mean over positions per channel, then over channels: equal sizes make it one mean.
    return (num / den).mean(dim=(1, 2, 3))


def ssim(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Structural similarity per frame (conventions in the module docstring).

    pred, target: float (..., H, W, C) in [0, data_range], H and W at least 11 -> (...), at most 1.
    """
    _check_pair(pred, target)
    *lead, h, w, c = pred.shape
    if h < SSIM_WINDOW or w < SSIM_WINDOW:
        raise DataError(
            f"frames are {h}x{w} pixels but SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} "
            "(its Gaussian window); use larger frames or report MSE/PSNR only"
        )
    x = pred.float().reshape(-1, h, w, c)  # (N, H, W, C), channels last as given
    y = target.float().reshape(-1, h, w, c)
    per_chunk = max(1, SSIM_CHUNK_ELEMENTS // (5 * c * h * w))
    parts = [
        _ssim_frames(xs, ys, data_range)
        for xs, ys in zip(x.split(per_chunk), y.split(per_chunk), strict=True)
    ]
    values = torch.cat(parts) if parts else x.new_zeros(0)
    return values.reshape(lead).to(_result_dtype(pred))


def as_unit_float(frames: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] frames (numpy or torch) -> float tensor in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if not isinstance(t, torch.Tensor):
        raise DataError(
            f"{name} must be a numpy array or torch tensor, got {type(frames).__name__}"
        )
    if t.dtype == torch.uint8:
        return t.double() / 255.0
    if not t.is_floating_point():
        raise DataError(f"{name} has dtype {t.dtype}; give uint8 in [0, 255] or float in [0, 1]")
    return t


def per_step_metrics(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor
) -> dict[str, list[float] | dict[str, float]]:
    """Metrics per predicted step, averaged over videos, as JSON-able Python floats.

    pred, target: (B, F, H, W, C) uint8 (divided by 255) or float in [0, 1], numpy or torch; the two
    may differ in dtype. Returns {"mse": [F], "psnr": [F], "ssim": [F],
    "mean": {"mse": float, "psnr": float, "ssim": float}} where "mean" averages the F steps.
    """
    x, y = as_unit_float(pred, "prediction"), as_unit_float(target, "target")
    if x.ndim != 5 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(
            f"per_step_metrics needs non-empty (B, F, H, W, C) videos, got shape {tuple(x.shape)}; "
            "add the missing batch, step or channel axis"
        )
    x, y = x.double(), y.double().to(x.device)
    result: dict[str, list[float] | dict[str, float]] = {}
    means: dict[str, float] = {}
    for key, fn in (("mse", mse), ("psnr", psnr), ("ssim", ssim)):
        steps = fn(x, y).mean(dim=0)  # (B, F) -> (F,)
        result[key] = [float(v) for v in steps.tolist()]
        means[key] = float(steps.mean())
    result["mean"] = means
    return result
