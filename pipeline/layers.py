"""How well a layered model (slots + background) decomposes the test videos, on data with factors.

- `slots`: the slot windows against the true sprites (decomposition_scores of
  vidlat.stages.stage1.hierarchical.decomposition: recall, precision, count accuracy, centre
  spread, identity switches, with chance levels), from the store's aligned z_where and presence;
- `background`: the background layer alone (decoded from the stored latents) on the videos that
  hold no sprite, SSIM against the frame; and for the synthetic source, whose background the
  generator redraws without sprites, the layer's error inside the sprites' boxes against that true
  background, beside the same error of the frame itself (a background layer that kept the
  sprites): their ratio `sprites_left` is 0 when the layer shows no sprite and ~1 when it copies
  them. SSIM of the layer against the true background over every frame too.

Values are means over frames (per-frame SSIM, region MSE with pixels in [0, 1]).
"""

from __future__ import annotations

import numpy as np
import torch

from vidlat.pipeline.metrics import as_unit_float, ssim
from vidlat.pipeline.scores import object_boxes, region_mse
from vidlat.stages.inference.rollout import decompose_latents
from vidlat.stages.stage1.base import Stage1Model
from vidlat.stages.stage1.hierarchical.decomposition import decomposition_scores
from vidlat.store.reader import LatentStore
from vidlat.store.videos import VideoArray


def _ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-frame SSIM of uint8 frames (..., H, W, C)."""
    return ssim(as_unit_float(a, "layer"), as_unit_float(b, "frames")).numpy()


def background_scores(
    background: np.ndarray,
    frames: np.ndarray,
    present: np.ndarray,
    true_background: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
) -> dict[str, float]:
    """background, frames uint8 (V, T, H, W, C); present (V, M) bool; true_background
    (V, H, W, C) uint8 and the sprites' boxes (V, T, H, W) bool when known. nan where a score has
    no frames (e.g. no video without sprites)."""
    empty = ~np.asarray(present, bool).any(axis=1)  # (V,)
    out = {
        "object_free_videos": int(empty.sum()),
        "ssim_object_free": float(_ssim(background[empty], frames[empty]).mean())
        if empty.any()
        else float("nan"),
    }
    if true_background is not None and boxes is not None:
        truth = np.broadcast_to(true_background[:, None], frames.shape)
        with np.errstate(invalid="ignore"):
            layer = np.nanmean(region_mse(background, truth, boxes)) if boxes.any() else np.nan
            frame = np.nanmean(region_mse(frames, truth, boxes)) if boxes.any() else np.nan
        out |= {
            "ssim_true_background": float(_ssim(background, truth).mean()),
            "mse_in_boxes": float(layer),
            "frame_mse_in_boxes": float(frame),
            "sprites_left": float(layer / frame) if frame > 0 else float("nan"),
        }
    return out


def decomposition_metrics(
    model: Stage1Model,
    store: LatentStore,
    videos: VideoArray,
    ids: np.ndarray,
    device: torch.device,
    batch_size: int = 256,
) -> dict:
    """{"slots": ..., "background": ...} of the module docstring for videos `ids`."""
    positions, present = videos.read_factor("position", ids), videos.read_factor("present", ids)
    where, presence = store.read("z_where", ids), store.read("presence", ids)
    result = {
        "slots": decomposition_scores(where, presence, positions, present, side=videos.height)
    }
    if not hasattr(model, "decompose"):
        return result
    latents = {f.name: store.read(f.name, ids) for f in model.latent_fields()}
    layer = decompose_latents(model, latents, device, batch_size)["background"]  # (V,T,C,H,W)
    layer = np.rint(np.moveaxis(layer, 2, -1).clip(0, 1) * 255).astype(np.uint8)
    frames = videos.read(ids)
    truth = boxes = None
    if videos.source == "synth" and "size" in videos.factor_names():
        from vidlat.pipeline.sources.synth import SynthConfig, background_of

        cfg = SynthConfig(**videos.attrs.get("source_config", {}))
        truth = np.stack([background_of(cfg, int(i)) for i in ids])
        size = videos.read_factor("size", ids)
        boxes = object_boxes(positions, size, present, videos.height, videos.width)
    result["background"] = background_scores(layer, frames, present, truth, boxes)
    return result
