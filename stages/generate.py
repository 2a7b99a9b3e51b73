"""Predict future frames: encode observed frames, roll the predictor on in latent space, decode."""

from __future__ import annotations

import numpy as np
import torch

from vidlat.errors import ConfigError
from vidlat.stages.encode import encode_frames
from vidlat.stages.stage1 import Stage1Model


@torch.inference_mode()
def decode_latents(
    model: Stage1Model, latents: dict[str, torch.Tensor], batch_size: int
) -> np.ndarray:
    """Decode {field: (B, F, *shape)} into uint8 frames (B, F, H, W, C), in batches."""
    b, f = next(iter(latents.values())).shape[:2]
    flat = {k: v.reshape(b * f, *v.shape[2:]) for k, v in latents.items()}
    out = []
    for i in range(0, b * f, batch_size):
        x = model.decode({k: v[i : i + batch_size] for k, v in flat.items()})  # (n, C, H, W)
        out.append(x.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1))
    frames = torch.cat(out).cpu().numpy()
    return frames.reshape(b, f, *frames.shape[1:])


@torch.inference_mode()
def predict_frames(
    model: Stage1Model,
    predictor: torch.nn.Module,
    past: np.ndarray,
    future: int,
    device: torch.device,
    batch_size: int = 256,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames (B, future, H, W, C) uint8 predicted from observed uint8 `past` (B, P, H, W, C).

    Also returns the predicted latents {field: (B, future, *shape)} as float32 arrays.
    """
    observed = model.postprocess_latents(encode_frames(model, past, batch_size, device))
    inputs = {
        k: torch.from_numpy(v).to(device) for k, v in observed.items() if k in predictor.fields
    }
    predicted = predictor.rollout(inputs, future)  # {field: (B, future, *shape)}
    frames = decode_latents(model, predicted, batch_size)
    return frames, {k: v.float().cpu().numpy() for k, v in predicted.items()}


@torch.inference_mode()
def sample_frames(
    model: Stage1Model,
    predictor: torch.nn.Module,
    past: np.ndarray,
    future: int,
    device: torch.device,
    samples: int,
    seed: int | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """K futures per input from a stochastic predictor: uint8 (B, K, future, H, W, C)."""
    if not hasattr(predictor, "sample_rollout"):
        raise ConfigError("--samples needs a stochastic predictor, e.g. train-predictor --kind svg")
    observed = model.postprocess_latents(encode_frames(model, past, batch_size, device))
    inputs = {
        k: torch.from_numpy(v).to(device) for k, v in observed.items() if k in predictor.fields
    }
    draws = predictor.sample_rollout(inputs, future, samples, seed)  # {field: (B, K, F, *shape)}
    b = len(past)
    frames = decode_latents(model, {k: v.flatten(0, 1) for k, v in draws.items()}, batch_size)
    return frames.reshape(b, samples, *frames.shape[1:])
