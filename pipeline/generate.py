"""`vidlat generate`: future frames of chosen videos as a Zarr dataset, GIFs, a grid and metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from vidlat.config import Config, write_resolved
from vidlat.errors import CheckpointError, ConfigError, DataError
from vidlat.pipeline.metrics import per_step_metrics
from vidlat.pipeline.sources.imported import load_array
from vidlat.stages.checkpoint import weights_hash
from vidlat.stages.generate import predict_frames
from vidlat.stages.images import save_gif, save_grid
from vidlat.stages.runtime import resolve_device
from vidlat.stages.stage1 import load_stage1
from vidlat.stages.train_predictor import load_predictor
from vidlat.store.videos import create_videos, open_videos

OBSERVED, PREDICTED = (40, 170, 60), (220, 40, 40)  # GIF border colours: green seen, red predicted


class GenerateConfig(Config):
    """Which videos to continue and how far; defaults come from the predictor's training."""

    videos: str = Field("0:8", description="video indices of a dataset: 'A:B' or 'i,j,k'")
    past: int | None = Field(None, ge=1, description="observed frames (default: as trained)")
    future: int | None = Field(None, ge=1, description="frames to predict (any length)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where models run")
    npy: bool = Field(False, description="also write predicted.npy (B, F, H, W, C) uint8")
    fps: int = Field(8, ge=1, description="GIF frame rate")


def parse_indices(text: str, n: int) -> list[int]:
    """'0:8' or '3,5,9' -> indices within [0, n); DataError names the bad part."""
    try:
        if ":" in text:
            a, b = (int(x) if x else None for x in text.split(":", 1))
            idx = list(range(n))[slice(a, b)]
        else:
            idx = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--videos {text!r} is not 'A:B' or a comma list of indices") from None
    bad = [i for i in idx if not 0 <= i < n]
    if not idx or bad:
        raise ConfigError(f"--videos {text!r} selects {bad or 'nothing'}; the data has {n} videos")
    return idx


def read_inputs(data: Path, cfg: GenerateConfig, past: int, future: int):
    """(past (B, P, H, W, C), truth (B, F', ...) or None, labels) of a dataset or a user's array."""
    if (data / "zarr.json").exists():
        videos = open_videos(data)
        idx = parse_indices(cfg.videos, videos.n_videos)
        frames = videos.read(idx)
        labels = [f"video {i}" for i in idx]
    else:
        frames = load_array(data, "vthwc")
        labels = [f"{data.name}[{i}]" for i in range(len(frames))]
    if frames.shape[1] < past:
        raise DataError(f"{data} has {frames.shape[1]} frames per video; --past {past} needs more")
    truth = frames[:, past : past + future] if frames.shape[1] > past else None
    return frames[:, :past], truth, labels


def check_encoder(ae_dir: Path, pred_meta: dict) -> None:
    """Refuse a predictor trained on latents of a different encoder, naming both hashes."""
    ours, theirs = weights_hash(ae_dir), pred_meta.get("encoder_hash")
    if ours != theirs:
        raise CheckpointError(
            f"the predictor was trained on latents of encoder {theirs}, but {ae_dir} holds encoder "
            f"{ours}; use the stage-1 run whose store the predictor was trained on"
        )


def generate(ae_dir: Path, pred_dir: Path, data: Path, cfg: GenerateConfig, out: Path) -> dict:
    """Predict; write predicted.zarr, a GIF per video, grid.png and metrics.json into `out`."""
    device = resolve_device(cfg.device)
    model, _ = load_stage1(ae_dir, device)
    predictor, meta = load_predictor(pred_dir, device)
    check_encoder(Path(ae_dir), meta)
    past = cfg.past or meta["config"]["past"]
    future = cfg.future or meta["config"]["future"]
    observed, truth, labels = read_inputs(Path(data), cfg, past, future)
    predicted, _ = predict_frames(model.eval(), predictor.eval(), observed, future, device)
    out = Path(out)
    write_resolved(cfg, out)
    write_frames(out, predicted, cfg.npy)
    write_pictures(out, observed, truth, predicted, labels, cfg.fps)
    metrics = {"videos": labels, "past": past, "future": future}
    if truth is not None:
        steps = truth.shape[1]
        metrics |= {"steps_with_truth": steps, **per_step_metrics(predicted[:, :steps], truth)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def write_frames(out: Path, predicted: np.ndarray, npy: bool) -> None:
    """predicted.zarr as a vidlat video dataset (inspectable, importable), and .npy on request."""
    b, f, h, w, c = predicted.shape
    writer = create_videos(
        out / "predicted.zarr", b, f, h, w, c, videos_per_chunk=8, overwrite=True
    )
    writer.write(0, predicted)
    writer.finish(
        source="generate", source_config={}, split={"train": [], "val": [], "test": list(range(b))}
    )
    if npy:
        np.save(out / "predicted.npy", predicted)


def bordered(frames: np.ndarray, colour: tuple[int, int, int], width: int = 2) -> np.ndarray:
    """Frames (T, H, W, C) with a coloured frame of `width` pixels painted in (grey becomes RGB)."""
    frames = np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames.copy()
    frames[:, :width], frames[:, -width:] = colour, colour
    frames[:, :, :width], frames[:, :, -width:] = colour, colour
    return frames


def write_pictures(out: Path, observed, truth, predicted, labels, fps: int) -> None:
    """One GIF per video (past | truth | prediction) and a grid of truth and prediction rows."""
    gifs = out / "gifs"
    gifs.mkdir(parents=True, exist_ok=True)
    rows, row_labels = [], []
    for i, label in enumerate(labels):
        seen = bordered(observed[i], OBSERVED)
        pred = np.concatenate([seen, bordered(predicted[i], PREDICTED)])
        held = np.concatenate([seen, np.repeat(seen[-1:], len(predicted[i]), axis=0)])
        panels = [held]
        if truth is not None:
            real = np.concatenate([seen, bordered(truth[i], OBSERVED)])
            real = np.concatenate([real, np.repeat(real[-1:], len(pred) - len(real), axis=0)])
            panels.append(real)
            rows.append(real)
            row_labels.append(f"{label} truth")
        panels.append(pred)
        save_gif(gifs / f"{i:03d}.gif", np.concatenate(panels, axis=2), fps=fps)
        rows.append(pred)
        row_labels.append(f"{label} predicted")
    save_grid(out / "grid.png", rows, labels=row_labels)
