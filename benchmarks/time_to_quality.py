"""Benchmark 5: time to quality, the two-stage pipeline vs the end-to-end pixel baseline.

The question users ask: for the same compute, which predicts better? On synthetic sprites, for
each wall-clock budget B, both sides train for B seconds on the same device and are scored on the
same test videos with the fair metrics (pipeline/scores.py): object-region MSE, SSIM and the PSNR of
the mean MSE, beside the copy of the last observed frame.
- two-stage: train-ae, encode, train-predictor, as `make demo` runs them (DRNET with skips,
  lstm-delta); the budget is shared 70 / 30 between the two trainings by step counts set from
  timing each command at two step counts (so its fixed costs, paid once, are not charged per
  step); encode's time counts too, and the whole wall time is reported;
- end-to-end: pixel_baseline.PixelPredictor (DRNET-sized encoder/decoder + the predictor's LSTM)
  trained on pixel windows until its B seconds are spent.

Run: python -m vidlat.benchmarks.time_to_quality [--size quick] [--device cpu] [--json]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vidlat.benchmarks.common import (
    arg_parser,
    emit,
    fmt,
    log,
    parse,
    pick_device,
    result,
    table,
)

# fmt: off
KEYS = ("image", "videos", "frames", "past", "future", "batch", "width", "content", "pose",
        "hidden", "budgets", "test_videos")
SIZES = {
    "micro":   (16,   24, 10, 3, 3,  8,  4,  8,  4,  16, (3.0,),               8),
    "quick":   (32,  256, 24, 8, 8, 32, 16, 64, 16, 128, (20.0, 40.0),       32),
    "default": (32, 2048, 24, 8, 8, 32, 32, 64, 16, 128, (150.0, 300.0, 600.0), 64),
}
# fmt: on
AE_SHARE = 0.7  # of a budget, to stage 1 (the rest, less encode's time, to stage 2)


def fabricate(folder: Path, p: dict) -> Path:
    from vidlat.pipeline.sources.synth import SynthConfig, make_synth

    sizes = {"object_size": (0.3, 0.45)}  # as the demo: sprites visible at 32x32
    cfg = SynthConfig(videos=p["videos"], frames=p["frames"], size=p["image"], objects=2, seed=0,
                      videos_per_chunk=16, **sizes)  # fmt: skip
    return make_synth(cfg, folder / "videos.zarr")


def score(pred: np.ndarray, past: np.ndarray, truth: np.ndarray, fac: dict) -> dict:
    """Fair figures of uint8 predictions (n, F, H, W, C) and of the copy of the last frame."""
    from vidlat.pipeline import scores
    from vidlat.pipeline.evaluate import frame_metrics

    boxes = scores.object_boxes(fac["position"], fac["size"], fac["present"], *truth.shape[2:4])
    holds = fac["present"].any(1)
    out = {}
    for name, frames in (
        ("model", pred),
        ("copy", scores.references(past, truth.shape[1])["copy_last"]),
    ):
        s = scores.summarise(frame_metrics(frames, truth, boxes), holds)["mean"]
        out[name] = {k: s[k] for k in ("object_mse", "ssim", "psnr_of_mean_mse", "mse")}
    return out


def test_set(data: Path, p: dict):
    from vidlat.store.videos import open_videos

    videos = open_videos(data)
    ids = np.sort(videos.split["test"])[: p["test_videos"]]
    frames = videos.read(ids)
    window = slice(p["past"], p["past"] + p["future"])
    fac = {f: videos.read_factor(f, ids) for f in ("position", "size", "present")}
    fac["position"] = fac["position"][:, window]
    return frames[:, : p["past"]], frames[:, window], fac


def two_stage(folder: Path, data: Path, budget: float, p: dict, device: torch.device) -> dict:
    from vidlat.stages.inference.encode import EncodeConfig, encode
    from vidlat.stages.inference.rollout import predict_frames
    from vidlat.stages.load import load_run
    from vidlat.stages.training.train_ae import TrainAEConfig, train_ae
    from vidlat.stages.training.train_predictor import TrainPredictorConfig, train_predictor
    from vidlat.store.reader import LatentStore
    from vidlat.store.videos import open_videos

    videos = open_videos(data)
    run = folder / f"two_stage_{budget:g}"
    params = {"width": p["width"], "content_dim": p["content"], "pose_dim": p["pose"]}
    common = {"device": device.type, "batch_size": p["batch"]}

    def ae_cfg(steps: int, log_every: int = 0) -> TrainAEConfig:
        every = {"log_every": log_every or max(1, steps), "checkpoint_every": max(1, steps)}
        return TrainAEConfig(
            model_params=params, steps=steps, sample_every=0, val_every=0, **every, **common
        )

    def pred_cfg(steps: int, log_every: int = 0) -> TrainPredictorConfig:
        return TrainPredictorConfig(kind="lstm-delta", hidden=p["hidden"], past=p["past"],
                                    future=p["future"], steps=steps, val_every=max(1, steps // 4),
                                    log_every=log_every or max(1, steps),
                                    checkpoint_every=max(1, steps), **common)  # fmt: skip

    # a short run of each command: its training loop's own timing (metrics.jsonl's samples/s, with
    # validation and saving left out) gives the cost of a step; the rest of its wall time is the
    # command's fixed cost (building the run, normalisation statistics, 4 validations, the
    # checkpoint), which the real run pays once whatever its length
    ae_fixed, ae_step = costs(
        lambda n, every, out: train_ae(videos, ae_cfg(n, every), out), run / "probe_ae", p["batch"]
    )
    store = encode(data, run / "probe_ae", run / "probe.zarr", EncodeConfig(device=device.type))
    pred_fixed, pred_step = costs(
        lambda n, every, out: train_predictor(LatentStore.open(store), pred_cfg(n, every), out),
        run / "probe_pred",
        p["batch"],
    )
    # the run itself, timed from here
    start = time.perf_counter()
    ae_steps = steps_for(AE_SHARE * budget, ae_fixed, ae_step)
    ae = train_ae(videos, ae_cfg(ae_steps), run / "ae")
    store = encode(data, ae, run / "latents.zarr", EncodeConfig(device=device.type))
    pred_steps = steps_for(budget - (time.perf_counter() - start), pred_fixed, pred_step)
    pred = train_predictor(LatentStore.open(store), pred_cfg(pred_steps), run / "pred")
    seconds = time.perf_counter() - start
    past, truth, fac = test_set(data, p)
    model, _ = load_run(ae, "stage1", device)
    predictor, _ = load_run(pred, "predictor", device, select="best")
    frames, _ = predict_frames(model, predictor, past, p["future"], device)
    plan = {
        "ae_steps": ae_steps,
        "predictor_steps": pred_steps,
        "ae_step_s": ae_step,
        "ae_fixed_s": ae_fixed,
        "predictor_step_s": pred_step,
        "predictor_fixed_s": pred_fixed,
    }
    return {"seconds": seconds, "plan": plan, **score(frames, past, truth, fac)}  # fmt: skip


PROBE_STEPS, PROBE_ROWS = 24, 6  # a multiple of 4: the predictor validates 4 times, as the run


def costs(train, out: Path, batch: int) -> tuple[float, float]:
    """(fixed seconds, seconds per step) of train(steps, log_every, out), from one PROBE_STEPS run:
    the per-step time from its metrics.jsonl rows after the first (which holds the warm-up), the
    rest of its wall time fixed."""
    start = time.perf_counter()
    train(PROBE_STEPS, PROBE_STEPS // PROBE_ROWS, out)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in rows if "samples_per_s" in r][1:]
    step = batch / float(np.median(rates))
    return max(wall - PROBE_STEPS * step, 0.0), step


def steps_for(seconds: float, fixed: float, step: float) -> int:
    """Steps that fit in `seconds` after the fixed cost (at least one)."""
    return max(1, int((seconds - fixed) / step))


def end_to_end(data: Path, budget: float, p: dict, device: torch.device) -> dict:
    from vidlat.benchmarks.pixel_baseline import PixelPredictor, parameter_count
    from vidlat.stages.common.runtime import frames_to_device, seed_everything
    from vidlat.store.videos import open_videos

    seed_everything(0)
    videos = open_videos(data)
    pixels = videos.read(np.sort(videos.split["train"]))  # (V, T, H, W, C) uint8
    window = p["past"] + p["future"]
    model = PixelPredictor(3, p["image"], p["content"] + p["pose"], p["width"], p["hidden"], 2)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng, steps, start = np.random.default_rng(0), 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        v = rng.integers(0, len(pixels), p["batch"])
        t0 = rng.integers(0, pixels.shape[1] - window + 1, p["batch"])
        clip = pixels[v[:, None], t0[:, None] + np.arange(window)]
        x = frames_to_device(clip.reshape(-1, *clip.shape[2:]), device).unflatten(0, clip.shape[:2])
        optimizer.zero_grad(set_to_none=True)
        model.loss(x, p["past"]).backward()
        optimizer.step()
        steps += 1
    seconds = time.perf_counter() - start
    past, truth, fac = test_set(data, p)
    model.eval()
    with torch.no_grad():
        x = frames_to_device(np.concatenate([past, truth], 1).reshape(-1, *past.shape[2:]), device)
        pred = model(x.unflatten(0, (len(past), window)), p["past"])  # (n, F, C, H, W)
    frames = (pred.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).cpu().numpy()
    return {"seconds": seconds, "steps": steps, "parameters": parameter_count(model),
            **score(frames, past, truth, fac)}  # fmt: skip


def run(size: str, device_name: str) -> dict:
    device = pick_device(device_name)
    p = dict(zip(KEYS, SIZES[size], strict=True))
    sides: dict = {"two_stage": {}, "end_to_end": {}}
    with tempfile.TemporaryDirectory(prefix="vidlat-bench-") as tmp:
        data = fabricate(Path(tmp), p)
        for budget in p["budgets"]:
            log(f"time_to_quality [{size}]: {budget:g} s, two-stage pipeline")
            sides["two_stage"][str(budget)] = two_stage(Path(tmp), data, budget, p, device)
            log(f"time_to_quality [{size}]: {budget:g} s, end-to-end pixel model")
            sides["end_to_end"][str(budget)] = end_to_end(data, budget, p, device)
    return summarise(sides, size, p, device)


def summarise(sides: dict, size: str, p: dict, device: torch.device) -> dict:
    rows, ratios = [], {}
    for budget in map(str, p["budgets"]):
        a, b = sides["two_stage"][budget], sides["end_to_end"][budget]
        for name, side in (("two-stage", a), ("end-to-end", b), ("copy last frame", None)):
            m = (side or a)["copy" if side is None else "model"]
            secs = "" if side is None else fmt(side["seconds"])
            rows.append([budget, name, secs, fmt(m["object_mse"]), fmt(m["ssim"]),
                         fmt(m["psnr_of_mean_mse"])])  # fmt: skip
        ratios[f"object_mse_{budget}"] = b["model"]["object_mse"] / max(
            a["model"]["object_mse"], 1e-12
        )
    for budget in map(str, p["budgets"]):
        cell = f"**{fmt(ratios[f'object_mse_{budget}'])}×**"
        rows.append([f"**ratio** at {budget} s", "end-to-end / two-stage", "", cell, "", ""])
    columns = ["budget (s)", "side", "wall s", "object-region MSE", "SSIM", "PSNR of mean MSE"]
    notes = [
        f"{p['image']}×{p['image']} synthetic sprites (2 at most), {p['videos']} videos of "
        f"{p['frames']} frames, {p['past']} observed → {p['future']} predicted, batch "
        f"{p['batch']}; scored on {p['test_videos']} test videos; ratio: end-to-end / two-stage "
        "object-region MSE (> 1: the two-stage pipeline is better at that budget)",
    ]
    title = "5. Time to quality: the two-stage pipeline vs an end-to-end pixel model"
    return result("time_to_quality", title, size, device, p, sides, ratios,
                  [table(columns, rows)], targets={"object_mse_*": "≥ 1"}, notes=notes,
                  plots=curves(sides, p))  # fmt: skip


def curves(sides: dict, p: dict) -> list[dict]:
    """Test object-region MSE and SSIM against the budget, for both sides and the copy of the last
    frame (scored on the same test videos each time: the same figure at every budget)."""
    budgets = [str(b) for b in p["budgets"]]
    plots = []
    for key, label in (("object_mse", "object-region MSE"), ("ssim", "SSIM")):
        series = {
            "two-stage": [sides["two_stage"][b]["model"][key] for b in budgets],
            "end-to-end": [sides["end_to_end"][b]["model"][key] for b in budgets],
            "copy last frame": [sides["two_stage"][b]["copy"][key] for b in budgets],
        }
        plots.append({"name": key, "title": f"Time to quality: test {label} vs training budget",
                      "xlabel": "training budget (s, wall clock)", "ylabel": label,
                      "x": [float(b) for b in p["budgets"]], "series": series})  # fmt: skip
    return plots


def main() -> None:
    args = parse(arg_parser(__doc__))
    emit(run(args.size, args.device), args.json)


if __name__ == "__main__":
    main()
