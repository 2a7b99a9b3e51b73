"""`vidlat evaluate`: prediction quality per future step, and disentanglement where factors exist.

Prediction: on the test split (up to `videos` videos), the first `past` frames' latents are read
from the store (the encoder already ran once per frame; the store is checked to match the stage-1
run), the predictor rolls them on `future` steps, the decoder draws the frames, and MSE, PSNR and
SSIM are taken per frame against the true frames (conventions of vidlat.pipeline.metrics: values per
frame, then the mean over videos per step). Beside the prediction, two references:
- `last_frame`: the last observed frame repeated (a predictor that learned nothing about motion);
- `reconstruction`: the decoded true future latents (the stage-1 ceiling of any predictor).
A stage-1 model with skips decodes both the prediction and the reconstruction with the last
`context` observed frames (as generate does): no future pixel is ever read.
A predictor with `sample_rollout(past, future, samples)` (stochastic) is drawn K = `samples`
times: `best_of_k` keeps, per video and per metric, the sample whose mean over the steps is best (as
SVG's evaluation does), `mean_over_k` averages the K samples' metrics, and `prediction` is the
first sample. Deterministic predictors give K = 1. Sampling is seeded by `seed`.

Disentanglement (stores holding the synthetic or Moving MNIST factors): the main paper's Table 1
probes (vidlat.pipeline.probes) and MIPAE's MIG (vidlat.pipeline.mig); for a slot model, how its
slots find the sprites and how clean its background layer is (vidlat.pipeline.layers).

Writes OUT/config.yaml first (with the past and future it runs), then mse.png, psnr.png,
ssim.png and OUT/evaluation.json last.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from vidlat.config import write_resolved
from vidlat.errors import DataError, StoreError
from vidlat.pipeline import scores
from vidlat.pipeline.configs import EvaluateConfig
from vidlat.pipeline.layers import decomposition_metrics
from vidlat.pipeline.metrics import mse, psnr, ssim
from vidlat.pipeline.mig import run_mig
from vidlat.pipeline.plots import line_plot
from vidlat.pipeline.probes import has_factors, run_probes
from vidlat.pipeline.scores import region_mse
from vidlat.progress import progress_bar
from vidlat.stages.common import provenance
from vidlat.stages.common.checkpoint import weights_hash
from vidlat.stages.common.runtime import resolve_device
from vidlat.stages.inference.rollout import context_frames, decode_latents
from vidlat.stages.load import load_run
from vidlat.stages.stage1.base import Stage1Model
from vidlat.stages.stage1.hierarchical.decomposition import scorable
from vidlat.store.reader import LatentStore
from vidlat.store.videos import VideoArray, open_videos

RESULT = "evaluation.json"
METRICS = {"mse": (mse, "min"), "psnr": (psnr, "max"), "ssim": (ssim, "max")}
UNITS = {"mse": "MSE (pixels in [0, 1])", "psnr": "PSNR (dB)", "ssim": "SSIM"}


def frame_metrics(
    pred: np.ndarray, truth: np.ndarray, boxes: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """uint8 frames (..., F, H, W, C) x2 -> {metric: float64 (..., F)}, one value per frame; with
    the sprites' boxes (B, F, H, W) (scores.object_boxes) also object_mse, nan where empty."""
    x = torch.from_numpy(pred).double() / 255.0
    y = torch.from_numpy(truth).double() / 255.0
    out = {name: fn(x, y).numpy() for name, (fn, _) in METRICS.items()}
    if boxes is not None:
        mask = boxes if pred.ndim == 5 else boxes[:, None].repeat(pred.shape[1], 1)
        flat = (-1, *pred.shape[-4:])
        out["object_mse"] = region_mse(
            pred.reshape(flat), truth.reshape(flat), mask.reshape(-1, *mask.shape[-3:])
        ).reshape(pred.shape[:-3])
    return out


def summarise(values: Mapping[str, np.ndarray], holds_object: np.ndarray | None = None) -> dict:
    """{metric: (n_videos, F)} -> the fair summary of pipeline/scores.py: [F] curves (PSNR capped
    at 60 dB, the PSNR of the mean MSE, object-region MSE) and "mean" over the steps."""
    return scores.summarise(values, holds_object)


def best_of_k(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{metric: (n, K, F)} -> {metric: (n, F)}: per video the sample with the best step mean."""
    out = {}
    for name, v in values.items():
        means = v.mean(2)  # (n, K)
        pick = means.argmin(1) if METRICS[name][1] == "min" else means.argmax(1)
        out[name] = v[np.arange(len(v)), pick]
    return out


def split_samples(result, k: int) -> list[dict[str, torch.Tensor]]:
    """sample_rollout's answer as K dicts {field: (B, F, *shape)}: it may be a list of such dicts
    or one dict of (B, K, F, *shape) tensors."""
    if isinstance(result, Mapping):
        return [{name: x[:, i] for name, x in result.items()} for i in range(k)]
    return list(result)


@torch.inference_mode()
def predict_batch(
    model: Stage1Model,
    predictor,
    observed: dict,
    future: int,
    k: int,
    batch_size: int,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """uint8 (b, K, F, H, W, C) from observed latents {field: (b, P, *shape)} on the device;
    `context` (context_frames of the observed pixels) for a model that decodes with skips."""
    if k > 1 and hasattr(predictor, "sample_rollout"):
        draws = split_samples(predictor.sample_rollout(observed, future, k), k)
    else:
        draws = [predictor.rollout(observed, future)]
    # K x (b, F, H, W, C)
    frames = [decode_latents(model, draw, batch_size, context) for draw in draws]
    return np.stack(frames, axis=1)


def eval_videos(store: LatentStore, most: int) -> tuple[str, np.ndarray]:
    """(split name, sorted video ids): the test split, else val, else train (named in the JSON)."""
    for name in ("test", "val", "train"):
        ids = np.sort(store.split.get(name, np.zeros(0, np.int64)))
        if len(ids):
            return name, ids[:most]
    raise StoreError(f"{store.path} records no split; re-encode a dataset made by vidlat data")


def prediction_metrics(
    model, predictor, store: LatentStore, videos: VideoArray, cfg: EvaluateConfig, device, window
) -> dict:
    """Per-step curves of the prediction and of the two references; see the module docstring."""
    past, future = window
    split, ids = eval_videos(store, cfg.videos)
    sampling = cfg.samples > 1 and hasattr(predictor, "sample_rollout")
    k = cfg.samples if sampling else 1
    names = list(predictor.fields)
    per_batch = max(1, cfg.batch_size // (future * k))
    acc: dict[str, list] = {"samples": [], "last_frame": [], "mean_frame": [], "reconstruction": []}
    has_boxes = set(scores.BOX_FACTORS) <= set(videos.factor_names())
    holds: list[np.ndarray] = []
    with progress_bar("evaluate", total=len(ids), unit="videos") as bar:
        for start in range(0, len(ids), per_batch):
            batch = ids[start : start + per_batch]
            lat = {n: torch.from_numpy(store.read(n, batch).astype(np.float32)) for n in names}
            frames = videos.read(batch)  # (b, T, H, W, C) uint8
            truth = frames[:, past : past + future]
            boxes = None
            if has_boxes:  # the true sprites' boxes at each future step
                fac = {f: videos.read_factor(f, batch) for f in scores.BOX_FACTORS}
                position = fac["position"][:, past : past + future]
                side = truth.shape[2:4]
                boxes = scores.object_boxes(position, fac["size"], fac["present"], *side)
                holds.append(fac["present"].any(1))
            observed = {n: x[:, :past].to(device) for n, x in lat.items()}
            context = context_frames(model, frames[:, :past], cfg.context)
            pred = predict_batch(model, predictor, observed, future, k, cfg.batch_size, context)
            acc["samples"].append(frame_metrics(pred, truth[:, None].repeat(k, 1), boxes))
            ref = scores.references(frames[:, :past], future)
            acc["last_frame"].append(frame_metrics(ref["copy_last"], truth, boxes))
            acc["mean_frame"].append(frame_metrics(ref["mean_frame"], truth, boxes))
            true_future = {n: x[:, past : past + future].to(device) for n, x in lat.items()}
            recon = decode_latents(model, true_future, cfg.batch_size, context)
            acc["reconstruction"].append(frame_metrics(recon, truth, boxes))
            bar.advance(len(batch))
    joined = {key: {m: np.concatenate([a[m] for a in parts]) for m in parts[0]}
              for key, parts in acc.items()}  # fmt: skip
    hold = np.concatenate(holds) if holds else None  # (n,) videos that hold an object
    samples = joined["samples"]
    curves = {"prediction": summarise({m: v[:, 0] for m, v in samples.items()}, hold)}
    if sampling:
        picked = best_of_k({m: samples[m] for m in METRICS})
        curves["best_of_k"] = summarise(picked, hold)
        curves["mean_over_k"] = summarise({m: v.mean(1) for m, v in samples.items()}, hold)
    refs = ("last_frame", "mean_frame", "reconstruction")
    curves |= {key: summarise(joined[key], hold) for key in refs}
    info = {"split": split, "videos": len(ids), "past": past, "future": future, "samples": k}
    return info | {"curves": curves}


def resolve_window(cfg: EvaluateConfig, meta: dict, n_frames: int) -> tuple[int, int]:
    """(past, future): the config's, else the predictor's training window; future is cut to the
    frames the videos hold after `past`."""
    past = cfg.past or meta["config"]["past"]
    future = cfg.future or meta["config"]["future"]
    if past >= n_frames:
        raise DataError(f"--past {past} leaves no frame to predict: videos hold {n_frames} frames")
    return past, min(future, n_frames - past)


def check_store(store: LatentStore, videos: VideoArray, ae_dir: Path) -> None:
    """StoreError unless the store was encoded by `ae_dir` from these very videos."""
    fix = "evaluate with the stage-1 run and the dataset that wrote the store"
    provenance.check_store(store.attrs, store.path, ae_dir, videos.fingerprint, fix)


def write_curves(out: Path, prediction: dict) -> list[Path]:
    """One PNG per metric with every curve of `prediction` (the JSON's "prediction" block)."""
    paths = []
    for metric, label in UNITS.items():
        series = {name.replace("_", " "): c[metric] for name, c in prediction["curves"].items()}
        where = f"{prediction['split']} split, {prediction['videos']} videos"
        title = f"{label} per future step ({where})"
        paths.append(line_plot(out / f"{metric}.png", series, title=title, ylabel=label))
    return paths


def evaluate(
    ae_dir: Path, pred_dir: Path, latents: Path, data: Path, cfg: EvaluateConfig, out: Path
) -> dict:
    """Evaluate a trained pair on a store and its dataset; write OUT/evaluation.json and curves."""
    out, ae_dir, pred_dir = Path(out), Path(ae_dir), Path(pred_dir)
    device = resolve_device(cfg.device)
    store, videos = LatentStore.open(latents), open_videos(data)
    check_store(store, videos, ae_dir)
    model, ae_meta = load_run(ae_dir, "stage1", device)
    predictor, meta = load_run(pred_dir, "predictor", device, select=cfg.select)
    provenance.check_trained_on(ae_dir, meta)
    window = resolve_window(cfg, meta, store.n_frames)
    write_resolved(cfg, out, used=dict(zip(("past", "future"), window, strict=True)))
    torch.manual_seed(cfg.seed)  # the draws of sampling predictors, repeatable
    result: dict = {
        "inputs": {"ae": str(ae_dir), "model": ae_meta["model"], "predictor": str(pred_dir),
                   "predictor_kind": meta["predictor"], "latents": str(latents),
                   "data": str(data), "encoder_hash": store.encoder_hash,
                   "predictor_hash": weights_hash(pred_dir, cfg.select),
                   "predictor_select": cfg.select},
        "prediction": prediction_metrics(model, predictor, store, videos, cfg, device, window),
    }  # fmt: skip
    write_curves(out, result["prediction"])
    if cfg.disentanglement and scorable(model, videos):
        split, ids = eval_videos(store, cfg.videos)
        found = decomposition_metrics(model, store, videos, ids, device, cfg.batch_size)
        result["decomposition"] = {"split": split, "videos": len(ids), **found}
    if cfg.disentanglement and has_factors(store):
        result["probes"] = run_probes(store, cfg.probes)
        result["mig"] = run_mig(store, cfg.mig, cfg.probes.shape_task)
    (out / RESULT).write_text(json.dumps(result, indent=2))
    return result
