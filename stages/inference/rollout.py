"""Predict future frames: encode observed frames, roll the predictor on in latent space, decode.

A stage-1 model with U-Net skips (`model.needs_context`) decodes with context frames: the last
observed frame(s) of each video, from which it recomputes its skips; latents alone are not enough.
"""

from __future__ import annotations

import numpy as np
import torch

from vidlat.errors import ConfigError, DataError
from vidlat.stages.common.runtime import encoder_input
from vidlat.stages.inference.encode import encode_frames
from vidlat.stages.stage1.base import Stage1Model
from vidlat.stages.stage2.avlae import AVLAE


def per_frame(fn, latents: dict, batch_size: int, device: torch.device | None = None) -> dict:
    """Apply `fn` ({field: (n, *shape)} tensors -> {name: (n, ...)} tensors) to latents
    {field: (B, F, *shape)} (tensors or arrays), `batch_size` frames at a time on `device`;
    returns {name: numpy (B, F, ...)}."""
    b, f = next(iter(latents.values())).shape[:2]
    flat = {k: torch.as_tensor(v).reshape(b * f, *v.shape[2:]) for k, v in latents.items()}
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, b * f, batch_size):
        part = {k: v[i : i + batch_size].to(device or v.device) for k, v in flat.items()}
        for name, x in fn(part).items():
            parts.setdefault(name, []).append(x.cpu().numpy())
    return {k: np.concatenate(p).reshape(b, f, *p[0].shape[1:]) for k, p in parts.items()}


CONTEXT = "__context__"  # per_frame key of the context frames beside the latents


def context_frames(model: Stage1Model, past: np.ndarray, n: int = 1) -> np.ndarray | None:
    """The decode context of observed uint8 frames (B, P, H, W, C): the last observed frame
    (B, H, W, C), or the last n (B, n, H, W, C) whose skips are averaged; None when the model
    decodes from latents alone."""
    if not model.needs_context:
        return None
    if not 1 <= n <= past.shape[1]:
        raise ConfigError(f"context of {n} frames needs 1..{past.shape[1]} (the observed frames)")
    return past[:, -1] if n == 1 else past[:, -n:]


@torch.inference_mode()
def decode_latents(
    model: Stage1Model,
    latents: dict[str, torch.Tensor],
    batch_size: int,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """Decode {field: (B, F, *shape)} into uint8 frames (B, F, H, W, C), in batches.

    `context`: uint8 frames of each video, (B, H, W, C) or (B, n, H, W, C) (context_frames), used
    for every one of its F frames by a model that needs them (decode's skips); ignored otherwise."""
    if context is not None and not model.needs_context:
        context = None
    if context is None and model.needs_context:
        raise ConfigError(
            f"the {model.name} model decodes with U-Net skips: it needs context frames (the last "
            "observed frame of each video); latents alone cannot be decoded"
        )
    latents = dict(latents)
    if context is not None:
        b, f = next(iter(latents.values())).shape[:2]
        if len(context) != b:
            raise DataError(f"{len(context)} context frames for {b} videos; give one per video")
        ctx = torch.as_tensor(np.ascontiguousarray(context))
        latents[CONTEXT] = ctx[:, None].expand(b, f, *ctx.shape[1:])  # (B, F, [n,] H, W, C)

    def frames(z):
        ctx = z.pop(CONTEXT, None)
        if ctx is not None:
            device = next(iter(z.values())).device
            ctx = encoder_input(ctx.to(device))  # (n, [k,] C, H, W)
        x = model.decode(z, context=ctx)  # (n, C, H, W)
        return {
            "frames": x.float().clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(0, 2, 3, 1)
        }

    return per_frame(frames, latents, batch_size)["frames"]


@torch.inference_mode()
def predict_frames(
    model: Stage1Model,
    predictor: torch.nn.Module,
    past: np.ndarray,
    future: int,
    device: torch.device,
    batch_size: int = 256,
    context: int = 1,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames (B, future, H, W, C) uint8 predicted from observed uint8 `past` (B, P, H, W, C);
    a model with skips decodes them with the last `context` observed frames (context_frames).

    Also returns the predicted latents {field: (B, future, *shape)} as float32 arrays.
    """
    observed = model.postprocess_latents(encode_frames(model, past, batch_size, device))
    inputs = {
        k: torch.from_numpy(v).to(device) for k, v in observed.items() if k in predictor.fields
    }
    predicted = predictor.rollout(inputs, future)  # {field: (B, future, *shape)}
    frames = decode_latents(model, predicted, batch_size, context_frames(model, past, context))
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
    context: int = 1,
) -> np.ndarray:
    """K futures per input from a stochastic predictor: uint8 (B, K, future, H, W, C); decoded
    with the last `context` observed frames by a model with skips."""
    if not hasattr(predictor, "sample_rollout"):
        raise ConfigError("--samples needs a stochastic predictor, e.g. train-predictor --kind svg")
    observed = model.postprocess_latents(encode_frames(model, past, batch_size, device))
    inputs = {
        k: torch.from_numpy(v).to(device) for k, v in observed.items() if k in predictor.fields
    }
    draws = predictor.sample_rollout(inputs, future, samples, seed)  # {field: (B, K, F, *shape)}
    b = len(past)
    ctx = context_frames(model, past, context)
    ctx = None if ctx is None else np.repeat(ctx, samples, axis=0)  # rows (video, sample)
    flat = {k: v.flatten(0, 1) for k, v in draws.items()}
    frames = decode_latents(model, flat, batch_size, ctx)
    return frames.reshape(b, samples, *frames.shape[1:])


@torch.inference_mode()
def decompose_latents(
    model: Stage1Model, latents: dict[str, np.ndarray], device: torch.device, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """A layered model's layers (its `decompose`) of latents {field: (B, F, *shape)}: float32
    {layer: (B, F, ...)} on the CPU, e.g. background, glimpses, masks, objects, composite."""
    if not hasattr(model, "decompose"):
        raise ConfigError(f"model {model.name!r} has no layers to show (no decompose())")

    def layers(z):
        return {k: v.float() for k, v in model.decompose(z).items()}

    return per_frame(layers, latents, batch_size, device)


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
    # a model with skips reads them from frame 1 (whose content every interpolated row keeps),
    # except for frame 2's own reconstruction
    first = pair[:1] if model.needs_context else None
    recon = [
        decode_latents(model, {k: v[i : i + 1, None] for k, v in z.items()}, 2, ctx)[0]
        for i, ctx in enumerate([first, None if first is None else pair[1:]])
    ]
    out = {"reconstruction": np.concatenate(recon)}
    t = torch.linspace(0, 1, steps, device=device)
    for name in fields:
        moved = {k: v[:1].expand(steps, *v.shape[1:]) for k, v in z.items()}
        a, b = z[name][0], z[name][1]
        moved[name] = a + (b - a) * t.view(-1, *[1] * a.dim())
        out[name] = decode_latents(model, {k: v[None] for k, v in moved.items()}, steps, first)[0]
    return out


FIXES = ("appearance", "motion")  # what --fix may hold fixed in unconditional sampling


@torch.no_grad()
def sample_sequences(
    generator: AVLAE, n: int, frames: int | None = None, fix: str | None = None, seed: int = 0
) -> dict[str, torch.Tensor]:
    """`n` latent sequences {field: float32 (n, T, *shape)} in store units, content and mask
    fields repeated over the T frames (default: the trained T; any T >= 2 works).

    fix=None: z_A and z_M drawn per sequence. "appearance": one z_A for all, z_M per sequence;
    "motion": one z_M for all, z_A per sequence. With the paper's joint G what stays the same is
    what training taught G to read from the held code (AVLAE's disentanglement claim, measurable
    here); with `generator: split` it is exact: identical static fields and first pose, or
    identical pose steps pose_t - pose_t-1 (up to float rounding). `seed` makes it repeatable.
    """
    if fix is not None and fix not in FIXES:
        raise ConfigError(f"fix {fix!r} is not one of {', '.join(FIXES)} (or none)")
    frames = frames or generator.cfg.frames
    if frames < 2 or n < 1:
        raise ConfigError(f"need n >= 1 sequences of >= 2 frames; got n={n}, frames={frames}")
    noise = torch.Generator(device=generator.step_scale.device).manual_seed(seed)
    z_a, z_m = generator.noise(n, noise)
    z_a = z_a[:1] if fix == "appearance" else z_a  # (1, Z): G broadcasts one code to all
    z_m = z_m[:1] if fix == "motion" else z_m
    return generator.to_store(*generator.generate(z_a, z_m, frames))
