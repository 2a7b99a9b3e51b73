"""A fair evaluation of predicted frames: capped PSNR, object regions, videos with objects.

Plain per-frame means flatter the copy of the last frame: identical frames score PSNR 100 dB, and
on the synthetic sprites a third of the videos hold no object at all, where the copy is perfect.
So every summary here gives, per future step and averaged over steps:

- `mse`, `ssim`: means over videos of the per-frame values (pipeline/metrics.py);
- `psnr`: the mean of per-frame PSNRs capped at PSNR_CAP = 60 dB (an MSE of 1e-6: beyond it the
  frames agree to a quarter of a uint8 level), and `psnr_of_mean_mse`, the PSNR of the step's mean
  MSE, which one near-perfect frame cannot lift;
- `object_mse`: on data with ground-truth sprite factors, the MSE inside the true sprites' boxes
  (the union of every present sprite's square at that step: the pixels where something moves),
  averaged over the videos that hold an object;
- `objects`: mse, psnr and ssim over the videos that hold an object only.
The references beside a model are built here too: the last observed frame held (`copy_last`) and
each video's mean observed frame (`mean_frame`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np

PSNR_CAP = 60.0  # dB: per-frame PSNR is capped here (MSE 1e-6)
BOX_FACTORS = ("position", "size", "present")  # what object_boxes needs from a dataset


def capped_psnr(mse: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB, data range 1) of MSE values, capped at PSNR_CAP."""
    return np.minimum(10 * np.log10(1.0 / np.maximum(mse, 10 ** (-PSNR_CAP / 10))), PSNR_CAP)


def object_boxes(
    position: np.ndarray, size: np.ndarray, present: np.ndarray, height: int, width: int
) -> np.ndarray:
    """Masks (B, F, H, W) bool of the union of the present sprites' boxes at each step.

    position (B, F, N, 2): sprite centres (x, y) in pixels from the top-left corner; size (B, N):
    sprite sides in pixels; present (B, N) bool. A pixel is inside when its centre is."""
    ys, xs = np.arange(height) + 0.5, np.arange(width) + 0.5
    half = np.asarray(size, np.float64)[:, None, :, None] / 2  # (B, 1, N, 1)
    cx, cy = position[..., 0:1], position[..., 1:2]  # (B, F, N, 1)
    in_x = np.abs(xs - cx) <= half  # (B, F, N, W)
    in_y = np.abs(ys - cy) <= half  # (B, F, N, H)
    boxes = in_y[..., :, None] & in_x[..., None, :]  # (B, F, N, H, W)
    return (boxes & np.asarray(present, bool)[:, None, :, None, None]).any(axis=2)


def region_mse(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """MSE (pixels in [0, 1]) of uint8 frames (B, F, H, W, C) inside mask (B, F, H, W); (B, F),
    nan where the mask is empty."""
    err = ((pred.astype(np.float64) - truth) / 255.0) ** 2  # (B, F, H, W, C)
    inside = mask[..., None]
    count = inside.sum(axis=(2, 3, 4)) * pred.shape[-1]
    total = (err * inside).sum(axis=(2, 3, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def references(past: np.ndarray, future: int) -> dict[str, np.ndarray]:
    """The trivial predictions of `future` frames from observed uint8 frames (B, P, H, W, C):
    copy_last (the last observed frame held) and mean_frame (each video's mean observed frame)."""
    last = np.repeat(past[:, -1:], future, axis=1)
    mean = np.repeat(past.astype(np.float64).mean(1, keepdims=True).round(), future, axis=1)
    return {"copy_last": last, "mean_frame": mean.astype(np.uint8)}


def _nanmean(x: np.ndarray, axis=None):
    """nanmean that is nan, silently, where every value is nan (no video holds an object)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def summarise(values: Mapping[str, np.ndarray], holds_object: np.ndarray | None = None) -> dict:
    """{metric: (n_videos, F)} (mse, psnr (uncapped or capped), ssim, optionally object_mse) ->
    the fair summary of the module docstring: [F] curves and "mean" over the steps."""
    mse, ssim = np.asarray(values["mse"]), np.asarray(values["ssim"])
    curves = {
        "mse": mse.mean(0),
        "psnr": capped_psnr(mse).mean(0),
        "psnr_of_mean_mse": capped_psnr(mse.mean(0)),
        "ssim": ssim.mean(0),
    }
    if "object_mse" in values:
        curves["object_mse"] = _nanmean(np.asarray(values["object_mse"]), axis=0)
    out: dict = {k: [float(x) for x in v] for k, v in curves.items()}
    out["mean"] = {k: float(_nanmean(v)) for k, v in curves.items()}
    out["mean"]["psnr_of_mean_mse"] = float(capped_psnr(mse.mean()))  # over steps and videos
    if holds_object is not None:
        keep = np.asarray(holds_object, bool)
        out["objects"] = {"videos": int(keep.sum())}
        if keep.any():
            sub = mse[keep]
            out["objects"] |= {
                "mse": float(sub.mean()),
                "psnr": float(capped_psnr(sub).mean()),
                "psnr_of_mean_mse": float(capped_psnr(sub.mean())),
                "ssim": float(ssim[keep].mean()),
            }
    return out
