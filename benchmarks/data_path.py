"""Benchmark 2: the data path, windows sampled from the Zarr store vs from the same tensors in RAM.

Three sides train the same predictor (same initial weights and normalisation), batch, window and
device with train_predictor's train_step, each step fed by:
- ram: the train split's latents as torch tensors in memory, windows gathered by index_select
  (the fastest data path there can be: no store, no copies but the gather);
- store, in memory: WindowSampler with the split read into memory once (the default when it fits);
- store, streaming: WindowSampler with memory_budget=1, so whole chunks are read from Zarr into a
  buffer of `buffer_chunks` chunks and windows drawn across it, as for a store larger than memory.
Sides run in interleaved rounds (ram, memory, streaming, ram, ...) so that drift of the machine
spreads over all of them; throughput is steps/s over the timed rounds, after warm-up steps. The
sampling time per batch alone is given beside it. The latents come from encoding synthetic videos
with an untrained DRNET of the usual latent sizes: what is read is a real store, compressed as
`vidlat encode` writes it.

Run: python benchmarks/data_path.py [--size quick] [--device cpu] [--json]
"""

from __future__ import annotations

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
    make_ae,
    make_store,
    make_videos,
    parse,
    pick_device,
    predictor_config,
    result,
    step_context,
    sync,
    table,
)

# fmt: off
KEYS = ("image", "videos", "frames", "past", "future", "batch", "hidden", "layers", "width",
        "content", "pose", "warmup", "rounds", "steps")
SIZES = {  # one row per size, a column per KEYS entry
    "micro":    (16,  16,  8,  2,  3,  4,   8, 1,  4,   8,  3, 2,  2, 2),
    "quick":    (16,  96, 32,  8,  8, 16,  64, 2,  8, 128, 10, 3, 12, 4),
    "default":  (32, 256, 48, 16, 16, 32, 256, 2, 16, 128, 10, 3, 15, 4),
}
# fmt: on
GPU_STEPS = {"warmup": 20, "rounds": 15, "steps": 40}
SIDES = {
    "ram": "tensors in RAM",
    "memory": "store, read into memory",
    "stream": "store, streaming by chunks",
}


class RamWindows:
    """The baseline: {field: float32 tensor (B, window, *shape)} gathered from tensors in RAM by
    one index_select per field on (V*T, *shape) (the fastest of the gathers we timed: 2-4x torch's
    2-D fancy indexing, 2x numpy's take)."""

    def __init__(self, store, fields: list[str], window: int, batch_size: int, seed: int):
        ids = np.unique(store.split["train"])
        data = {n: torch.from_numpy(store.read(n, ids).astype(np.float32)) for n in fields}
        self.flat = {n: x.reshape(-1, *x.shape[2:]) for n, x in data.items()}  # (V*T, *shape)
        self.n, self.frames = len(ids), store.n_frames
        self.window, self.batch_size = window, batch_size
        self.rng = np.random.default_rng(seed)

    def sample(self) -> dict[str, torch.Tensor]:
        b, w = self.batch_size, self.window
        first = self.rng.integers(0, self.n, b) * self.frames
        first += self.rng.integers(0, self.frames - w + 1, b)
        index = torch.from_numpy((first[:, None] + np.arange(w)).reshape(-1))  # (B*window,)
        return {n: x.index_select(0, index).view(b, w, *x.shape[1:]) for n, x in self.flat.items()}


def batches(side: str, store, fields: list[str], cfg, device: torch.device):
    """The side's batch function: () -> {field: float32 tensor (B, window, *shape)} on `device`."""
    from vidlat.stages.training.train_predictor import to_device
    from vidlat.store.sampler import WindowSampler

    window = cfg.past + cfg.future
    if side == "ram":
        ram = RamWindows(store, fields, window, cfg.batch_size, cfg.seed)
        return lambda: {k: v.to(device, non_blocking=True) for k, v in ram.sample().items()}
    budget = 2**40 if side == "memory" else 1  # 1 byte: nothing fits, every chunk streams
    sampler = WindowSampler(
        store,
        window=window,
        batch_size=cfg.batch_size,
        fields=fields,
        memory_budget=budget,
        seed=cfg.seed,
    )
    if sampler.in_memory != (side == "memory"):
        raise RuntimeError(f"the {side} side's sampler is in the wrong mode")
    return lambda: to_device(sampler.sample(), device)


def build_sides(store, p: dict, device: torch.device) -> tuple[dict, object]:
    """Per side: (batch function, model, optimisers); every model starts from the same weights."""
    from vidlat.stages.common.runtime import seed_everything
    from vidlat.stages.training.train_predictor import build_run

    cfg, sides = predictor_config(p, device), {}
    for side in SIDES:
        seed_everything(cfg.seed)
        model, _ = build_run(store, cfg)
        model.to(device).train()
        optimizers = model.make_optimizers(cfg.lr)
        sides[side] = (batches(side, store, list(model.fields), cfg, device), model, optimizers)
    return sides, cfg


def time_rounds(sides: dict, cfg, p: dict, device: torch.device) -> tuple[dict, dict, dict]:
    """Per side, seconds of each timed round and of sampling within it; the training losses.
    Round 0 (warm-up steps) is not kept."""
    from vidlat.stages.training.train_predictor import train_step

    seconds, sampling = {k: [] for k in sides}, {k: [] for k in sides}
    sums = {k: torch.zeros(3, device=device) for k in sides}
    for r in range(p["rounds"] + 1):
        for side, (batch, model, optimizers) in sides.items():
            sync(device)
            start, in_sampler = time.perf_counter(), 0.0
            for _ in range(p["steps"] if r else p["warmup"]):
                t0 = time.perf_counter()
                window = batch()
                in_sampler += time.perf_counter() - t0
                losses = train_step(model, window, step_context(optimizers, device), cfg)
                sums[side] += torch.stack([v.float() for v in losses.values()])
            sync(device)
            if r:
                seconds[side].append(time.perf_counter() - start)
                sampling[side].append(in_sampler)
    return seconds, sampling, sums


def measure(store, p: dict, device: torch.device) -> dict:
    """Per side: steps/s and sampling ms per batch (medians over rounds) and its throughput over
    RAM's in the same round (median over rounds)."""
    sides, cfg = build_sides(store, p, device)
    seconds, sampling, sums = time_rounds(sides, cfg, p, device)
    n, ram = p["steps"], np.array(seconds["ram"])
    return {
        side: {
            "steps_per_s": float(np.median(n / np.array(seconds[side]))),
            "sample_ms": float(np.median(1e3 * np.array(sampling[side]) / n)),
            "vs_ram": float(np.median(ram / np.array(seconds[side]))),
            "timed_steps": n * p["rounds"],
            "loss": float(sums[side][0]) / (n * p["rounds"] + p["warmup"]),
        }
        for side in sides
    }


def run(size: str, device_name: str) -> dict:
    from vidlat.store.reader import LatentStore

    device = pick_device(device_name)
    p = dict(zip(KEYS, SIZES[size], strict=True))
    if device.type == "cuda" and size != "micro":
        p.update(GPU_STEPS)
    with tempfile.TemporaryDirectory(prefix="vidlat-bench-") as tmp:
        folder = Path(tmp)
        log(f"data_path [{size}]: fabricating videos, encoder and store")
        data = make_videos(folder, videos=p["videos"], frames=p["frames"], image=p["image"])
        ae = make_ae(folder, data, width=p["width"], content=p["content"], pose=p["pose"])
        store = LatentStore.open(make_store(folder, data, ae, device=device.type))
        log(f"data_path [{size}]: {p['rounds']} interleaved rounds of {p['steps']} steps per side")
        sides = measure(store, p, device)
        chunks = int(np.unique(store.split["train"] // store.videos_per_chunk).size)
    ratios = {k: sides[k]["vs_ram"] for k in ("memory", "stream")}
    rows = [
        [SIDES[k], fmt(v["steps_per_s"]), fmt(v["sample_ms"]), fmt(v["vs_ram"])]
        for k, v in sides.items()
    ]
    ratio_text = f"**{fmt(ratios['memory'])}**, **{fmt(ratios['stream'])}**"
    rows.append(["**ratio** store / RAM throughput (in memory, streaming)", "", "", ratio_text])
    columns = ["data path", "steps/s (sample + step)", "sampling ms/batch", "throughput vs RAM"]
    notes = [
        f"latents: content {p['content']} + pose {p['pose']} per frame, {p['videos']} videos × "
        f"{p['frames']} frames, 8 videos per chunk ({chunks} train chunks); window "
        f"{p['past'] + p['future']}, batch {p['batch']}; lstm-delta hidden {p['hidden']} × "
        f"{p['layers']} layers",
        f"{p['rounds']} interleaved rounds × {p['steps']} timed steps per side after "
        f"{p['warmup']} warm-up steps; medians over rounds; a ratio compares sides within a round",
        "streaming holds 8 chunks (buffer_chunks default) and reads the others from Zarr as the "
        "buffer empties, in the training thread",
    ]
    title = "2. Data path: Zarr store vs the same tensors in RAM"
    return result("data_path", title, size, device, p, sides, ratios, [table(columns, rows)],
                  targets={"memory": "≥ 0.9", "stream": "≥ 0.9"}, notes=notes)  # fmt: skip


def main() -> None:
    args = parse(arg_parser(__doc__))
    emit(run(args.size, args.device), args.json)


if __name__ == "__main__":
    main()
