"""Benchmark 4: bytes on disk per frame, float32 and float16 stores vs raw uint8 pixels, and what
storing float16 does to the predictor's error.

One dataset is encoded twice by the same (briefly trained) DRNET, `vidlat encode --dtype float32`
and `--dtype float16`. Sizes are bytes of files on disk divided by frames; "latent arrays" counts
the latent fields alone, "whole store" adds metadata and the ground-truth factors copied from the
synthetic dataset. The float16 effect is measured three ways, the last two as future MSE
(normalised pose units, free-running over the future frames) on the same val-split windows:
- the rounding itself: RMS of (float16 - float32) latents over each feature's std;
- predictors trained on float32 fed float16 windows instead of float32 ones (paired by seed);
- predictors trained on the float16 store vs on the float32 store with the same seeds: the
  difference of the means, in units of the seed-to-seed standard deviation (the noise floor; a
  float16 store changes the training data slightly, so a training run diverges like a new seed).

Run: python benchmarks/store_size.py [--size quick] [--device cpu] [--json]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from vidlat.benchmarks.common import (
    arg_parser,
    emit,
    fmt,
    folder_bytes,
    log,
    make_ae,
    make_store,
    make_videos,
    parse,
    pick_device,
    predictor_config,
    result,
    table,
)

# fmt: off
KEYS = ("image", "videos", "frames", "width", "content", "pose", "ae_steps", "past", "future",
        "batch", "hidden", "layers", "steps", "eval_batches", "seeds")
SIZES = {  # one row per size, a column per KEYS entry
    "micro":    (16,  10,  8,  4,   8,  3,   2, 2, 3,  4,   8, 1,   3,  2, 2),
    "quick":    (32,  48, 20,  8, 128, 10, 100, 4, 6, 16,  64, 2, 200,  8, 3),
    "default":  (64, 128, 32, 16, 128, 10, 300, 8, 8, 32, 256, 2, 400, 16, 3),
}
# fmt: on


def sizes_per_frame(data: Path, stores: dict[str, Path], p: dict) -> dict:
    """Bytes per frame of raw pixels, the video array on disk, and each store."""
    from vidlat.store.reader import LatentStore

    frames = p["videos"] * p["frames"]
    out = {
        "raw": {"bytes_per_frame": p["image"] ** 2 * 3},
        "videos": {"bytes_per_frame": folder_bytes(data / "videos") / frames},
    }
    for dtype, path in stores.items():
        store = LatentStore.open(path)
        latent = [n for n, s in store.fields.items() if s.role != "aux"]
        out[dtype] = {
            "bytes_per_frame": sum(folder_bytes(path / n) for n in latent) / frames,
            "whole_store_per_frame": folder_bytes(path) / frames,
            "raw_latent_bytes_per_frame": sum(int(np.prod(store.fields[n].shape)) for n in latent)
            * np.dtype(dtype).itemsize,
        }
    return out


def rounding_error(stores: dict[str, Path]) -> tuple[float, str]:
    """Largest RMS(float16 - float32) / std of a latent feature, and its field's name."""
    from vidlat.store.reader import LatentStore

    a, b = LatentStore.open(stores["float32"]), LatentStore.open(stores["float16"])
    worst, field = 0.0, ""
    for name, spec in a.fields.items():
        if spec.role == "aux":
            continue
        x, y = a.read(name, slice(None)), b.read(name, slice(None)).astype(np.float32)
        axes = tuple(range(x.ndim - 1))
        rms = np.sqrt(((y - x) ** 2).mean(axis=axes)) / np.maximum(x.std(axis=axes), 1e-12)
        if rms.max() > worst:
            worst, field = float(rms.max()), name
    return worst, field


@torch.no_grad()
def future_mse(pred_dir: Path, store_path: Path, p: dict, device: torch.device) -> float:
    """Mean future MSE of a trained predictor on fixed val windows of a store (seeded draw)."""
    from vidlat.stages.load import load_run
    from vidlat.stages.training.train_predictor import to_device
    from vidlat.store.reader import LatentStore
    from vidlat.store.sampler import WindowSampler

    model, _ = load_run(pred_dir, "predictor", device)
    store = LatentStore.open(store_path)
    sampler = WindowSampler(
        store,
        window=p["past"] + p["future"],
        batch_size=p["batch"],
        split="val",
        fields=list(model.fields),
        seed=1234,
    )
    values = [
        model(to_device(sampler.sample(), device), p["past"]).future_mse
        for _ in range(p["eval_batches"])
    ]
    return float(torch.stack(values).mean())


def train(store_path: Path, out: Path, p: dict, device: torch.device, seed: int) -> Path:
    """A predictor trained by train-predictor itself on the store at `store_path`."""
    from vidlat.stages.training.train_predictor import train_predictor
    from vidlat.store.reader import LatentStore

    steps = p["steps"]
    loop = {"steps": steps, "log_every": max(1, steps // 4), "checkpoint_every": max(1, steps)}
    cfg = predictor_config(p, device, seed=seed, val_every=0, **loop)
    return train_predictor(LatentStore.open(store_path), cfg, out)


def float16_effect(folder: Path, stores: dict[str, Path], p: dict, device: torch.device) -> dict:
    """Future MSE per seed: float32-trained predictors on float32 and on float16 windows (the
    rounding of the inputs alone), float16-trained ones (same seeds) on float32 windows."""
    f32, f16 = stores["float32"], stores["float16"]
    mse: dict[str, list[float]] = {"f32_on_f32": [], "f32_on_f16": [], "f16_on_f32": []}
    for seed in range(p["seeds"]):
        a = train(f32, folder / f"pred-f32-{seed}", p, device, seed)
        b = train(f16, folder / f"pred-f16-{seed}", p, device, seed)
        mse["f32_on_f32"].append(future_mse(a, f32, p, device))
        mse["f32_on_f16"].append(future_mse(a, f16, p, device))
        mse["f16_on_f32"].append(future_mse(b, f32, p, device))
    x, y, z = (np.array(mse[k]) for k in ("f32_on_f32", "f32_on_f16", "f16_on_f32"))
    spread = float(x.std(ddof=1))  # seed to seed: the noise any change must be compared with
    return {
        "mse": mse,
        "input_relative_change": float(np.mean(np.abs(y - x) / x)),  # paired, per seed
        "training_relative_change": float((z.mean() - x.mean()) / x.mean()),
        "seed_std": spread,
        "training_change_in_seed_stds": float(abs(z.mean() - x.mean()) / max(spread, 1e-12)),
    }


def measure(size: str, p: dict, device: torch.device) -> dict:
    """Sizes per frame of every side, the rounding error and the float16 effect."""
    with tempfile.TemporaryDirectory(prefix="vidlat-bench-") as tmp:
        folder = Path(tmp)
        log(f"store_size [{size}]: videos and a DRNET trained {p['ae_steps']} steps")
        data = make_videos(folder, videos=p["videos"], frames=p["frames"], image=p["image"])
        ae = make_ae(folder, data, width=p["width"], content=p["content"], pose=p["pose"],
                     steps=p["ae_steps"], device=device.type)  # fmt: skip
        stores = {
            dt: make_store(folder, data, ae, dtype=dt, device=device.type, name=f"{dt}.zarr")
            for dt in ("float32", "float16")
        }
        sides = sizes_per_frame(data, stores, p)
        log(f"store_size [{size}]: predictors of {p['steps']} steps, {p['seeds']} seeds per store")
        effect = float16_effect(folder, stores, p, device)
        worst, field = rounding_error(stores)
        sides["float16_effect"] = {**effect, "rounding_rms_over_std": worst, "worst_field": field}
    return sides


def size_table(sides: dict) -> tuple[str, dict]:
    """Bytes per frame of every side; the ratios raw / store."""
    per = {k: v["bytes_per_frame"] for k, v in sides.items() if "bytes_per_frame" in v}
    raw = per["raw"]
    ratios = {"raw_vs_float32": raw / per["float32"], "raw_vs_float16": raw / per["float16"]}
    rows = [
        ["raw uint8 pixels (H×W×C)", fmt(raw), "", "", "1"],
        ["video dataset on disk (uint8, Blosc/Zstd)", fmt(per["videos"]), "", fmt(raw),
         fmt(raw / per["videos"])],
        *([f"latent store, {dt}", fmt(per[dt]), fmt(sides[dt]["whole_store_per_frame"]),
           fmt(sides[dt]["raw_latent_bytes_per_frame"]), fmt(raw / per[dt])]
          for dt in ("float32", "float16")),
        ["**ratio** raw pixels / store (float32, float16)", "", "", "",
         f"**{fmt(ratios['raw_vs_float32'])}×**, **{fmt(ratios['raw_vs_float16'])}×**"],
    ]  # fmt: skip
    cols = ["what", "bytes/frame on disk (latent arrays)", "whole store", "uncompressed",
            "raw / this"]  # fmt: skip
    return table(cols, rows), ratios


def effect_table(effect: dict, seeds: int) -> tuple[str, dict]:
    """Future MSE with float16 vs float32, against the seed-to-seed spread."""
    mse = {k: np.array(v) for k, v in effect["mse"].items()}

    def mean_std(v: np.ndarray) -> str:
        return f"{fmt(v.mean())} ± {fmt(v.std(ddof=1))}"

    ratios = {"float16_training_change_in_seed_stds": effect["training_change_in_seed_stds"]}
    rows = [
        [f"float16 rounding: largest RMS(f16 − f32) / std of a feature ({effect['worst_field']})",
         fmt(effect["rounding_rms_over_std"]), ""],
        ["predictors trained on float32, float32 val windows", mean_std(mse["f32_on_f32"]), "—"],
        ["the same predictors, float16 val windows", mean_std(mse["f32_on_f16"]),
         fmt(effect["input_relative_change"])],
        ["predictors trained on float16 (same seeds), float32 val windows",
         mean_std(mse["f16_on_f32"]), fmt(effect["training_relative_change"])],
        ["**ratio** distance of the float16-trained mean from the float32 one, in seed stds", "",
         f"**{fmt(ratios['float16_training_change_in_seed_stds'])}**"],
    ]  # fmt: skip
    cols = [f"float16 effect ({seeds} seeds)", "future MSE, mean ± std over seeds",
            "relative change vs float32"]  # fmt: skip
    return table(cols, rows), ratios


def run(size: str, device_name: str) -> dict:
    device = pick_device(device_name)
    p = dict(zip(KEYS, SIZES[size], strict=True))
    sides = measure(size, p, device)
    size_text, ratios = size_table(sides)
    effect_text, effect_ratios = effect_table(sides["float16_effect"], p["seeds"])
    texts, ratios = [size_text, effect_text], ratios | effect_ratios
    notes = [
        f"{p['videos']} videos × {p['frames']} frames of {p['image']}×{p['image']}×3; DRNET "
        f"width {p['width']}, content {p['content']} + pose {p['pose']} per frame, trained "
        f"{p['ae_steps']} steps; lstm-delta hidden {p['hidden']} × {p['layers']}, past "
        f"{p['past']}, future {p['future']}, {p['steps']} steps, batch {p['batch']}",
        f"future MSE (normalised pose units) over {p['eval_batches']} batches of {p['batch']} "
        "val windows, the same windows for every row; a relative change is paired by seed for "
        "the same predictors, of the means otherwise",
    ]
    title = "4. Store size per frame, and float16's effect on the predictor"
    return result("store_size", title, size, device, p, sides, ratios, texts, notes=notes)


def main() -> None:
    args = parse(arg_parser(__doc__))
    emit(run(args.size, args.device), args.json)


if __name__ == "__main__":
    main()
