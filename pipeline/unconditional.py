"""`vidlat generate --unconditional N`: sample latent sequences from AVLAE, decode them to frames.

No video is read: the generator (vidlat train-generator) draws whole latent sequences in the store's
units, and the stage-1 decoder whose encoder wrote that store turns them into frames.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from vidlat.config import Config, write_resolved
from vidlat.errors import ConfigError
from vidlat.stages.common import provenance
from vidlat.stages.common.images import save_gif, save_grid
from vidlat.stages.common.runtime import resolve_device
from vidlat.stages.inference.rollout import FIXES, decode_latents, sample_sequences
from vidlat.stages.load import load_run

Fix = Literal[FIXES]  # type: ignore[valid-type]  # "appearance" | "motion"


class UnconditionalConfig(Config):
    """How many frames, which noise, and how the sampled sequences are written."""

    frames: int | None = Field(None, ge=2, description="frames per sequence (default: as trained)")
    seed: int = Field(0, description="seeds the noise: the same seed draws the same sequences")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where models run")
    batch_size: int = Field(256, ge=1, description="frames per decoder call")
    npy: bool = Field(False, description="also write frames.npy (N, T, H, W, C) uint8")
    fps: int = Field(8, ge=1, description="GIF frame rate")


def generate_unconditional(
    ae_dir: Path, gen_dir: Path, n: int, fix: Fix | None, out: Path, cfg: UnconditionalConfig
) -> dict:
    """Sample `n` sequences (holding one code when `fix` is given), decode them; write into `out`:
    gifs/NNN.gif, grid.png (a row per sequence), latents.npz ({field: (n, T, *shape)} in store
    units), summary.json, config.yaml and, with cfg.npy, frames.npy. Returns the summary."""
    device = resolve_device(cfg.device)
    model, _ = load_run(ae_dir, "stage1", device)
    generator, meta = load_run(gen_dir, "generator", device)
    provenance.check_trained_on(ae_dir, meta, what="generator")
    if model.needs_context:
        raise ConfigError(
            f"{ae_dir} is a {model.name} model with U-Net skips: it decodes from a content frame, "
            "and unconditional sequences have none; train stage 1 with skips: false for AVLAE"
        )
    latents = sample_sequences(generator, n, cfg.frames, fix, cfg.seed)  # {field: (n, T, ...)}
    frames = decode_latents(model.eval(), latents, cfg.batch_size)  # (n, T, H, W, C) uint8
    out = Path(out)
    write_resolved(cfg, out, used={"frames": int(frames.shape[1])})  # as trained, unless given
    np.savez(out / "latents.npz", **{k: v.float().cpu().numpy() for k, v in latents.items()})
    if cfg.npy:
        np.save(out / "frames.npy", frames)
    held = f" (same {fix})" if fix else ""
    labels = [f"sample {i}{held}" for i in range(n)]
    for i, video in enumerate(frames):
        save_gif(out / "gifs" / f"{i:03d}.gif", video, fps=cfg.fps)
    save_grid(out / "grid.png", list(frames), labels=labels)
    summary = {
        "sequences": n,
        "frames": int(frames.shape[1]),
        "fix": fix,
        "seed": cfg.seed,
        "fields": sorted(latents),
        "encoder_hash": meta.get("encoder_hash"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
