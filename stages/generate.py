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


@torch.inference_mode()
def decompose_latents(
    model: Stage1Model, latents: dict[str, np.ndarray], device: torch.device, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """A layered model's layers (its `decompose`) of latents {field: (B, F, *shape)}: float32
    {layer: (B, F, ...)} on the CPU, e.g. background, glimpses, masks, objects, composite."""
    if not hasattr(model, "decompose"):
        raise ConfigError(f"model {model.name!r} has no layers to show (no decompose())")
    b, f = next(iter(latents.values())).shape[:2]
    flat = {k: torch.from_numpy(v.reshape(b * f, *v.shape[2:])) for k, v in latents.items()}
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, b * f, batch_size):
        part = {k: v[i : i + batch_size].to(device) for k, v in flat.items()}
        for name, x in model.decompose(part).items():
            parts.setdefault(name, []).append(x.float().cpu().numpy())
    return {k: np.concatenate(p).reshape(b, f, *p[0].shape[1:]) for k, p in parts.items()}


def interpolation_fields(model: Stage1Model, names: list[str]) -> list[str]:
    """Check --interpolate names against the model's latent fields; 'all' = every field that
    shapes the picture (all roles but mask)."""
    fields = {f.name: f for f in model.latent_fields()}
    if "all" in names:
        return [n for n, f in fields.items() if f.role != "mask"]
    if bad := [n for n in names if n not in fields]:
        raise ConfigError(
            f"--interpolate {', '.join(bad)}: model {model.name!r} has the fields "
            f"{', '.join(fields)} (or 'all')"
        )
    return list(dict.fromkeys(names))


@torch.inference_mode()
def interpolate_frames(
    model: Stage1Model, pair: np.ndarray, fields: list[str], steps: int, device: torch.device
) -> dict[str, np.ndarray]:
    """Main paper, Figure 4: encode two frames (2, H, W, C) uint8, then for each field in `fields`
    move that field linearly from frame 1's value to frame 2's in `steps` steps while every other
    field keeps frame 1's value. Slot models align frame 2's slots to frame 1's first (as encode
    does along a video). Returns {"reconstruction": (2, H, W, C), field: (steps, H, W, C)} uint8."""
    z = model.postprocess_latents(encode_frames(model, pair[None], 2, device))
    z = {f.name: torch.from_numpy(z[f.name][0]).to(device) for f in model.latent_fields()}
    out = {"reconstruction": decode_latents(model, {k: v[None] for k, v in z.items()}, 2)[0]}
    t = torch.linspace(0, 1, steps, device=device)
    for name in fields:
        moved = {k: v[:1].expand(steps, *v.shape[1:]) for k, v in z.items()}
        a, b = z[name][0], z[name][1]
        moved[name] = a + (b - a) * t.view(-1, *[1] * a.dim())
        out[name] = decode_latents(model, {k: v[None] for k, v in moved.items()}, steps)[0]
    return out
