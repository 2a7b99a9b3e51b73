"""`vidlat generate`: future frames of chosen videos as a Zarr dataset, GIFs, a grid and metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from vidlat.config import write_resolved
from vidlat.errors import ConfigError, DataError
from vidlat.pipeline import scores
from vidlat.pipeline.configs import GenerateConfig
from vidlat.pipeline.evaluate import best_of_k, frame_metrics, summarise
from vidlat.pipeline.metrics import per_step_metrics
from vidlat.pipeline.sources.imported import load_array, resize_frames
from vidlat.pipeline.sources.video_files import is_video_source, load_video_files
from vidlat.pipeline.unconditional import UnconditionalConfig, generate_unconditional
from vidlat.stages.common import provenance
from vidlat.stages.common.images import (
    captioned,
    has_pyav,
    save_gif,
    save_grid,
    save_layers,
    save_mp4,
    upscaled,
)
from vidlat.stages.common.runtime import resolve_device
from vidlat.stages.inference.rollout import (
    decompose_latents,
    interpolate_frames,
    interpolation_fields,
    predict_frames,
    sample_frames,
)
from vidlat.stages.load import load_run
from vidlat.store import places
from vidlat.store.videos import create_videos, open_videos

OBSERVED, PREDICTED = (40, 170, 60), (220, 40, 40)  # GIF border colours: green seen, red predicted


MAX_OUTPUT_BYTES = 8 * 2**30  # predicted frames held in memory at once


def parse_indices(text: str, n: int) -> list[int]:
    """'0:8' or '3,5,9' -> indices within [0, n); DataError names the bad part."""
    try:
        if ":" in text:
            a, b = (int(x) if x else None for x in text.split(":", 1))
            if (a or 0) < 0 or (b or 0) < 0:
                raise ConfigError(
                    f"--videos {text!r}: indices count from 0; negative ones are not accepted"
                )
            idx = list(range(n))[slice(a, b)]
        else:
            idx = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--videos {text!r} is not 'A:B' or a comma list of indices") from None
    bad = [i for i in idx if not 0 <= i < n]
    if not idx or bad:
        raise ConfigError(f"--videos {text!r} selects {bad or 'nothing'}; the data has {n} videos")
    return idx


def read_videos(
    data: Path, cfg: GenerateConfig, clip: int
) -> tuple[np.ndarray, list[int], list[str]]:
    """The chosen videos (B, T, H, W, C) uint8, their indices in the source and a label each: of a
    dataset (default: 8 of its test split), a user's .npy/.npz array (all) or video files (every
    clip of `clip` frames at cfg.stride, see sources/video_files.py)."""
    if (data / "zarr.json").exists():
        videos = open_videos(data)
        test = [int(i) for i in videos.split.get("test", [])[:8]]
        idx = parse_indices(cfg.videos, videos.n_videos) if cfg.videos or not test else test
        return videos.read(idx), idx, [f"video {i}" for i in idx]
    if is_video_source(data):
        frames, names = load_video_files(
            data, frames=cfg.frames or clip, stride=cfg.stride, size=None
        )
    else:
        frames = load_array(data, "vthwc")
        names = [f"{data.name}[{i}]" for i in range(len(frames))]
    idx = parse_indices(cfg.videos, len(frames)) if cfg.videos else list(range(len(frames)))
    return frames[idx], idx, [names[i] for i in idx]


def fit_frames(frames: np.ndarray, size: int, channels: int, data: Path) -> np.ndarray:
    """Videos (B, T, H, W, C) resized to the model's size×size (bilinear); DataError naming both
    shapes when the channels differ (grey and RGB models are not interchangeable)."""
    h, w, c = frames.shape[2:]
    if c != channels:
        raise DataError(
            f"{data} has {h}×{w}×{c} frames but the stage-1 model takes {size}×{size}×{channels}; "
            f"give {'RGB' if channels == 3 else 'grey'} videos"
        )
    return frames if (h, w) == (size, size) else resize_frames(frames, size)


def read_inputs(data: Path, cfg: GenerateConfig, past: int, future: int, model):
    """(past (B, P, H, W, C), truth (B, F', ...) or None, indices, labels) of a dataset, a user's
    array or video files, at the model's frame size."""
    frames, idx, labels = read_videos(data, cfg, past + future)
    if frames.shape[1] < past:
        raise DataError(f"{data} has {frames.shape[1]} frames per video; --past {past} needs more")
    frames = fit_frames(frames, model.image_size, model.channels, data)
    truth = frames[:, past : past + future] if frames.shape[1] > past else None
    return frames[:, :past], truth, idx, labels


def check_output_size(observed: np.ndarray, future: int, samples: int) -> None:
    """ConfigError before allocating predicted frames larger than MAX_OUTPUT_BYTES."""
    need = observed.shape[0] * samples * future * int(np.prod(observed.shape[2:]))
    if need > MAX_OUTPUT_BYTES:
        raise ConfigError(
            f"{observed.shape[0]} videos x {samples} samples x {future} frames need "
            f"{need / 2**30:.1f} GiB; choose fewer --videos, --samples or --future"
        )


def used_window(cfg: GenerateConfig, meta: dict) -> dict[str, int]:
    """past and future as generate runs them (and config.yaml records them): the config's, else
    the predictor's training window (`meta`: its checkpoint's)."""
    trained = meta["config"]
    return {"past": cfg.past or trained["past"], "future": cfg.future or trained["future"]}


def generate(ae_dir: Path, pred_dir: Path, data: Path, cfg: GenerateConfig, out: Path) -> dict:
    """Predict; write predicted.zarr, a GIF per video, grid.png and metrics.json into `out`."""
    device = resolve_device(cfg.device)
    model, _ = load_run(ae_dir, "stage1", device)
    predictor, meta = load_run(pred_dir, "predictor", device, select=cfg.select)
    provenance.check_trained_on(ae_dir, meta)
    window = used_window(cfg, meta)
    past, future = window["past"], window["future"]
    observed, truth, idx, labels = read_inputs(Path(data), cfg, past, future, model)
    check_output_size(observed, future, cfg.samples)
    model, predictor = model.eval(), predictor.eval()
    if cfg.samples == 1:
        predicted, latents = predict_frames(
            model, predictor, observed, future, device, context=cfg.context
        )
        predicted = predicted[:, None]
    else:
        predicted = sample_frames(
            model, predictor, observed, future, device, cfg.samples, cfg.seed, context=cfg.context
        )
    out = Path(out)  # predicted: (B, K, F, H, W, C) uint8
    write_resolved(cfg, out, used=window)
    write_frames(out, predicted, cfg.npy, {"path": str(data), "videos": idx, "labels": labels})
    write_pictures(out, observed, truth, predicted, labels, cfg.fps, cfg.mp4)
    if cfg.samples == 1 and hasattr(model, "decompose"):
        first = {k: v[:1] for k, v in latents.items()}
        save_layers(out / "layers.png", decompose_latents(model, first, device), labels[0])
    metrics = {"source": str(data), "videos": idx, "labels": labels}
    metrics |= {"past": past, "future": future, "samples": cfg.samples}
    if truth is not None:
        metrics |= truth_metrics(predicted, truth)
        metrics["fair"] = fair_metrics(predicted[:, 0], observed, truth)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def truth_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Per-step metrics of sample 0; with K > 1 also best-of-K and mean-over-K (SVG's rule)."""
    steps = truth.shape[1]
    metrics = {"steps_with_truth": steps, **per_step_metrics(predicted[:, 0, :steps], truth)}
    if predicted.shape[1] > 1:
        pred = predicted[:, :, :steps]
        truth_k = np.ascontiguousarray(np.broadcast_to(truth[:, None], pred.shape))
        values = frame_metrics(pred, truth_k)  # {metric: (B, K, F)}
        metrics["best_of_k"] = summarise(best_of_k(values))
        metrics["mean_over_k"] = summarise({k: v.mean(1) for k, v in values.items()})
    return metrics


def fair_metrics(predicted: np.ndarray, observed: np.ndarray, truth: np.ndarray) -> dict:
    """The prediction (sample 0) beside the copy of the last observed frame and the mean observed
    frame, each summarised as pipeline/scores.py does (PSNR capped at 60 dB, PSNR of the mean
    MSE); `vidlat evaluate` adds the object regions from the dataset's factors."""
    steps = truth.shape[1]
    sides = {"model": predicted[:, :steps], **scores.references(observed, steps)}
    return {name: summarise(frame_metrics(pred, truth)) for name, pred in sides.items()}


def write_frames(out: Path, predicted: np.ndarray, npy: bool, source: dict) -> None:
    """predicted.zarr: a vidlat dataset of B·K videos (video i, sample k at i·K + k),
    so `vidlat inspect` reads it; its source_config records `source` (the input's path, the
    indices of the videos predicted, their labels). predicted.npy (B, K, F, H, W, C) on request."""
    b, k, f, h, w, c = predicted.shape
    writer = create_videos(out / "predicted.zarr", b * k, f, h, w, c, overwrite=True)
    writer.write(0, predicted.reshape(b * k, f, h, w, c))
    split = {"train": [], "val": [], "test": list(range(b * k))}
    config = {"samples": k, "videos": b, "source": source}
    writer.finish(source="generate", source_config=config, split=split)
    if npy:
        np.save(out / "predicted.npy", predicted if k > 1 else predicted[:, 0])


def bordered(frames: np.ndarray, colour: tuple[int, int, int], width: int = 2) -> np.ndarray:
    """Frames (T, H, W, C) inside a coloured frame of `width` pixels added around them, so no pixel
    of the frame is covered: (T, H + 2 width, W + 2 width, 3) (grey becomes RGB)."""
    frames = np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames
    t, h, w, _ = frames.shape
    out = np.empty((t, h + 2 * width, w + 2 * width, 3), np.uint8)
    out[:] = colour
    out[:, width : width + h, width : width + w] = frames
    return out


def write_pictures(
    out: Path, observed, truth, predicted, labels, fps: int, mp4: bool = False
) -> None:
    """One GIF (and mp4 with PyAV) per video, panels observed | truth | each sample captioned with
    their name and step, and a grid of truth and sample rows; frames upscaled to >= 128 px."""
    observed, predicted = upscaled(observed), upscaled(predicted)
    truth = upscaled(truth) if truth is not None else None
    gifs = out / "gifs"
    gifs.mkdir(parents=True, exist_ok=True)
    rows, row_labels = [], []
    for i, label in enumerate(labels):
        seen = bordered(observed[i], OBSERVED)
        samples = [np.concatenate([seen, bordered(p, PREDICTED)]) for p in predicted[i]]
        length = len(samples[0])
        panels = [np.concatenate([seen, np.repeat(seen[-1:], length - len(seen), axis=0)])]
        names = ["observed"]
        if truth is not None:
            real = np.concatenate([seen, bordered(truth[i], OBSERVED)])
            real = np.concatenate([real, np.repeat(real[-1:], length - len(real), axis=0)])
            panels.append(real)
            names.append("truth")
            rows.append(real)
            row_labels.append(f"{label} truth")
        samples_names = (
            ["predicted"] if len(samples) == 1 else [f"sample {k}" for k in range(len(samples))]
        )
        panels += samples
        names += samples_names
        steps = [f"t={t}" for t in range(length)]
        strip = np.concatenate(
            [captioned(p, n, steps) for p, n in zip(panels, names, strict=True)], axis=2
        )
        save_gif(gifs / f"{i:03d}.gif", strip, fps=fps)
        if mp4 and has_pyav():
            save_mp4(gifs / f"{i:03d}.mp4", strip, fps=fps)
        rows += samples
        row_labels += [f"{label} {name}" for name in samples_names]
    save_grid(out / "grid.png", rows, labels=row_labels)


def parse_between(text: str | None, n_videos: int, n_frames: int) -> list[tuple[int, int]]:
    """'V:T,V:T' -> two (video, frame) pairs within the chosen videos; default (0, 0), (1, 0)
    (one video: its first and last frame)."""
    if text is None:
        return [(0, 0), (1, 0)] if n_videos > 1 else [(0, 0), (0, n_frames - 1)]
    try:
        pairs = [tuple(int(x) for x in part.split(":")) for part in text.split(",")]
    except ValueError:
        pairs = []
    if len(pairs) != 2 or any(len(p) != 2 for p in pairs):
        raise ConfigError(f"--between {text!r} is not 'V:T,V:T' (two video:frame pairs)")
    if bad := [p for p in pairs if not (0 <= p[0] < n_videos and 0 <= p[1] < n_frames)]:
        raise ConfigError(
            f"--between {text!r}: {bad} lies outside the {n_videos} chosen videos of "
            f"{n_frames} frames (V counts within --videos)"
        )
    return pairs


def interpolate(ae_dir: Path, data: Path, cfg: GenerateConfig, out: Path) -> Path:
    """Figure 4 of the main paper: interpolate.png, one row per field of cfg.interpolate."""
    device = resolve_device(cfg.device)
    model, _ = load_run(ae_dir, "stage1", device)
    fields = interpolation_fields(model, cfg.interpolate)
    frames, _, labels = read_videos(Path(data), cfg, cfg.frames or 10**9)
    frames = fit_frames(frames, model.image_size, model.channels, Path(data))
    (va, ta), (vb, tb) = parse_between(cfg.between, len(frames), frames.shape[1])
    pair = np.stack([frames[va, ta], frames[vb, tb]])
    rows = interpolate_frames(model.eval(), pair, fields, cfg.interpolate_steps, device)
    names = [f"{labels[va]} t={ta}, {labels[vb]} t={tb}: inputs, reconstructions"]
    grid = [np.concatenate([pair, rows.pop("reconstruction")])]
    names += [f"{name}: 1 -> 2" for name in rows]
    path = Path(out) / "interpolate.png"
    write_resolved(cfg, Path(out))
    return save_grid(path, grid + list(rows.values()), labels=names)


def run_generate(
    cfg: GenerateConfig,
    out: Path,
    ae: Path,
    predictor: Path | None = None,
    data: Path | None = None,
    generator: Path | None = None,
    unconditional: int | None = None,
    fix: str | None = None,
    overwrite: bool = False,
) -> list[str]:
    """`vidlat generate`: choose the mode from what is given, run it, and return the lines that
    tell the user what was written. Modes: --interpolate (Figure 4; with --predictor, then the
    frames too), --generator with --unconditional N (AVLAE), else --predictor with --data.

    `out` may not overlap an input; an existing one must be an earlier generate output and needs
    `overwrite`. Everything is written beside it and swapped in once complete."""
    out = Path(out)
    inputs = {"--ae": ae, "--predictor": predictor, "--data": data, "--generator": generator}
    places.refuse_overlap(out, inputs)
    places.check_place(out, "generate", overwrite)
    work = places.beside(out)
    work.mkdir(parents=True)
    try:
        lines = _run_modes(cfg, work, out, ae, predictor, data, generator, unconditional, fix)
        (work / places.GENERATED).write_text("written by vidlat generate\n")
        places.swap_in(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return lines


def _run_modes(cfg, work: Path, out: Path, ae, predictor, data, generator, unconditional, fix):
    """run_generate's modes, writing into `work`; the lines name `out`, where it will be."""
    lines = []
    if cfg.interpolate:
        if data is None:
            raise ConfigError("--interpolate needs --data: the frames to interpolate between")
        interpolate(ae, data, cfg, work)
        lines.append(f"wrote {out / 'interpolate.png'}")
        if predictor is None:
            return lines
    if unconditional is not None or generator is not None:
        if generator is None or unconditional is None:
            raise ConfigError(
                "unconditional videos need both --generator GEN_DIR and --unconditional N"
            )
        ucfg = UnconditionalConfig(frames=cfg.future, seed=cfg.seed or 0, device=cfg.device,
                                   npy=cfg.npy, fps=cfg.fps)  # fmt: skip
        summary = generate_unconditional(ae, generator, unconditional, fix, work, ucfg)
        return lines + [
            f"wrote {summary['sequences']} sequences of {summary['frames']} frames: "
            f"{out}/gifs/, {out}/grid.png, {out}/latents.npz"
        ]
    if fix is not None:
        raise ConfigError("--fix needs --generator GEN_DIR and --unconditional N")
    if predictor is None or data is None:
        raise ConfigError("give --predictor and --data (or --generator with --unconditional N)")
    metrics = generate(ae, predictor, data, cfg, work)
    lines.append(f"wrote {out}/grid.png, {out}/gifs/, {out}/predicted.zarr")
    if "mse" in metrics:
        mean = metrics["mean"]
        lines.append(
            f"mean over {metrics['steps_with_truth']} future steps: MSE {mean['mse']:.4f}  "
            f"PSNR {mean['psnr']:.2f} dB  SSIM {mean['ssim']:.3f}  ({out}/metrics.json)"
        )
    return lines
