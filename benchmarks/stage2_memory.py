"""Benchmark 1: stage-2 memory and speed, training from the latent store vs re-encoding pixels.

The same predictor (kind, sizes, initial weights, normalisation), batch, window and device train
(a) from the latent store through WindowSampler, as `vidlat train-predictor` does, and (b) as
DRNET's reference does: the frozen stage-1 encoder re-encodes the pixel window at every step
(vidlat.stages.training.online, one time step of the batch per encoder call, as drnet-py). Both use
train_predictor's own train_step. Each side runs in a fresh subprocess, so that on CPU its peak
resident set is its own; memory is measured from the state where models, optimiser state and data
are ready, before the first step:
- "first steps": peak over every step (warm-up included) above that state, as the issue defines it;
- "steady step": the same over a few more steps, measured after the warm-up (one-time costs such as
  kernel code pages, allocator pools and library caches excluded);
- "data path": sampling and moving batches to the device alone, without the predictor step;
- "saved for backward + gradients": one more step's activations as autograd keeps them for the
  backward pass (common.SavedForBackward) plus the trained parameters' gradients: the figure that
  isolates activations, the same on any device.
Steps/s are over the timed steps only, after the warm-up steps.

Run: python -m vidlat.benchmarks.stage2_memory [--size quick] [--device cpu] [--json]
     [--image 128] [--batch 16]   (another frame side or batch than the size's; by hand only)
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import torch

from vidlat.benchmarks.common import (
    PeakMemory,
    SavedForBackward,
    arg_parser,
    emit,
    fmt,
    log,
    make_ae,
    make_store,
    make_videos,
    materialise_optimizers,
    mib,
    parse,
    pick_device,
    predictor_config,
    result,
    run_child,
    step_context,
    table,
    timed,
)

# image: frame side; past + future: window; batch: windows per step; hidden/layers: the predictor;
# width/content/pose: the DRNET encoder; steps: timed steps (warm-up excluded) per side.
# fmt: off
KEYS = ("image", "videos", "frames", "past", "future", "batch", "hidden", "layers", "width",
        "content", "pose", "warmup", "steps", "online_steps", "mem_steps")
SIZES = {  # one row per size, a column per KEYS entry
    "micro":    (16,  8,  6,  2,  2,  4,   8, 1,  4,   8,  3, 3,  2, 1, 1),
    "quick":    (32, 24, 24,  8,  8, 16,  64, 2, 16, 128, 10, 3, 20, 3, 2),
    "default":  (64, 40, 40, 16, 16, 32, 256, 2, 64, 128, 10, 2, 30, 3, 2),
}
# fmt: on
# A GPU step takes milliseconds: more of them, for steady timings.
GPU_STEPS = {"warmup": 10, "steps": 200, "online_steps": 50, "mem_steps": 5}
SIDES = {
    "store": "store (WindowSampler)",
    "online": "online (re-encode every step)",
    "end_to_end": "end-to-end pixel predictor",
}


def params_for(
    size: str, device: torch.device, image: int | None = None, batch: int | None = None
) -> dict:
    """The size's settings; `image` and `batch` (when given) replace its frame side and batch."""
    p = dict(zip(KEYS, SIZES[size], strict=True))
    if device.type == "cuda" and size != "micro":
        p.update(GPU_STEPS)
    return p | {k: v for k, v in (("image", image), ("batch", batch)) if v}


def end_to_end_setup(folder: Path, p: dict, device: torch.device):
    """(step, batch, sums) of the end-to-end pixel baseline (pixel_baseline.py), sized like the
    pipeline: DRNET's encoder/decoder (code = content + pose) and the predictor's LSTM."""
    import numpy as np

    from vidlat.benchmarks.pixel_baseline import PixelPredictor
    from vidlat.stages.common.runtime import frames_to_device, seed_everything
    from vidlat.store.videos import open_videos

    seed_everything(0)
    model = PixelPredictor(3, p["image"], p["content"] + p["pose"], p["width"], p["hidden"],
                           p["layers"]).to(device).train()  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    materialise_optimizers(model, {"adam": optimizer})
    videos = open_videos(folder / "videos.zarr")
    pixels = videos.read(slice(None))  # (V, T, H, W, C) uint8, all in memory as the store side's
    window, rng = p["past"] + p["future"], np.random.default_rng(0)
    sums = torch.zeros(3, device=device)

    def batch() -> torch.Tensor:
        v = rng.integers(0, len(pixels), p["batch"])
        t0 = rng.integers(0, pixels.shape[1] - window + 1, p["batch"])
        clip = pixels[v[:, None], t0[:, None] + np.arange(window)]  # (B, T, H, W, C)
        x = frames_to_device(clip.reshape(-1, *clip.shape[2:]), device)  # (B*T, C, H, W)
        return x.unflatten(0, (p["batch"], window))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = model.loss(batch(), p["past"])
        loss.backward()
        optimizer.step()
        sums[0] += loss.detach()

    return step, batch, sums, list(model.parameters())


def setup(side: str, folder: Path, p: dict, device: torch.device):
    """(step, batch, sums, parameters): one training step, the batch function alone, the summed
    (loss, future MSE, grad norm) of the steps taken, the trained parameters. The predictor, its
    normalisation and its optimiser state are built the same way on both sides, from the store."""
    if side == "end_to_end":
        return end_to_end_setup(folder, p, device)
    from vidlat.stages.common.runtime import seed_everything
    from vidlat.stages.training.online import OnlineLatents, OnlineWindowSampler
    from vidlat.stages.training.train_predictor import build_run, to_device, train_step
    from vidlat.store.reader import LatentStore
    from vidlat.store.sampler import WindowSampler

    cfg = predictor_config(p, device)
    store = LatentStore.open(folder / "latents.zarr")
    seed_everything(cfg.seed)
    model, _ = build_run(store, cfg)
    model.to(device).train()
    optimizers = model.make_optimizers(cfg.lr)
    materialise_optimizers(model, optimizers)
    kw = {"window": cfg.past + cfg.future, "batch_size": cfg.batch_size, "seed": cfg.seed}
    kw["fields"] = list(model.fields)
    if side == "store":
        sampler = WindowSampler(store, **kw)
        batch = lambda: to_device(sampler.sample(), device)  # noqa: E731
    else:  # DRNET's reference: B frames (one time step of the batch) per encoder call
        source = OnlineLatents(folder / "videos.zarr", folder / "ae", device, p["batch"])
        batch = OnlineWindowSampler(source, **kw).sample  # tensors already on the device
    ctx, sums = step_context(optimizers, device), torch.zeros(3, device=device)

    def step() -> None:
        losses = train_step(model, batch(), ctx, cfg)
        sums.add_(torch.stack([v.float() for v in losses.values()]))  # no host sync

    return step, batch, sums, list(model.parameters())


def child(side: str, folder: Path, p: dict, device: torch.device) -> dict:
    """Train one side in this (fresh) process; its memory, speed and mean loss."""
    step, batch, sums, parameters = setup(side, folder, p, device)
    n = p["steps"] if side == "store" else p["online_steps"]  # the pixel sides are slow
    probe = PeakMemory(device)
    probe.start()  # models, optimiser state and data ready; no step taken yet
    timed(step, p["warmup"], device)
    seconds = timed(step, n, device)
    first = probe.rise()
    probe.start()  # after the warm-up: one-time costs are behind
    timed(step, p["mem_steps"], device)
    steady = probe.rise()
    probe.start()
    data_s = timed(batch, p["mem_steps"], device)
    data = probe.rise()
    with SavedForBackward(parameters) as saved:  # one more step: what its backward pass keeps
        step()
    grads = sum(q.numel() * q.element_size() for q in parameters if q.requires_grad)
    return {
        "activation_bytes": saved.bytes + grads,
        "saved_bytes": saved.bytes,
        "grad_bytes": grads,
        "first_bytes": first,
        "steady_bytes": steady,
        "data_bytes": data,
        "steps_per_s": n / seconds,
        "data_ms": 1e3 * data_s / p["mem_steps"],
        "steps": n,
        "loss": float(sums[0]) / (p["warmup"] + n + p["mem_steps"] + 1),
        "peak_reset": probe.exact,
        "parameters": sum(q.numel() for q in parameters),  # trained on this side
        # the store path must never load a stage-1 model (every model module imports stage1)
        "imports_stage1": "vidlat.stages.stage1.base" in sys.modules,
    }


def fabricate(folder: Path, p: dict, device: torch.device) -> None:
    """Videos, an (untrained) DRNET of the size asked, and their latent store, in `folder`."""
    data = make_videos(folder, videos=p["videos"], frames=p["frames"], image=p["image"])
    ae = make_ae(folder, data, width=p["width"], content=p["content"], pose=p["pose"])
    make_store(folder, data, ae, device=device.type)


def run(size: str, device_name: str, image: int | None = None, batch: int | None = None) -> dict:
    device = pick_device(device_name)
    p = params_for(size, device, image, batch)
    with tempfile.TemporaryDirectory(prefix="vidlat-bench-") as tmp:
        log(f"stage2_memory [{size}]: fabricating videos, encoder and store")
        fabricate(Path(tmp), p, device)
        sides = {}
        for side in SIDES:
            log(f"stage2_memory [{size}]: {side} side in a fresh process")
            args = ["--child", side, "--workdir", tmp, "--size", size, "--device", device_name,
                    "--threads", str(torch.get_num_threads()), "--image", str(p["image"]),
                    "--batch", str(p["batch"])]  # fmt: skip
            sides[side] = run_child("vidlat.benchmarks.stage2_memory", args)  # not __main__
    if not all(math.isfinite(v["loss"]) for v in sides.values()):
        raise RuntimeError(f"a side diverged: {sides}")
    return summarise(sides, size, p, device)


# (key in a side's numbers, column title, formatter)
COLUMNS = [
    ("first_bytes", "peak above ready state, first steps (MiB)", mib),
    ("steady_bytes", "steady step peak (MiB)", mib),
    ("data_bytes", "data path alone (MiB)", mib),
    ("activation_bytes", "saved for backward + gradients, one step (MiB)", mib),
    ("steps_per_s", "steps/s", fmt),
    ("data_ms", "data path ms/step", fmt),
]


def summarise(sides: dict, size: str, p: dict, device: torch.device) -> dict:
    """The result dict: both sides, the ratios (online / store for memory, store / online for
    speed and data path time), the table."""
    s, o, e = sides["store"], sides["online"], sides["end_to_end"]

    def over_store(other: dict) -> dict:  # memory, data time: other / store; speed: store / other
        out = {k: other[k] / max(s[k], 1e-9) for k, _, _ in COLUMNS if k != "steps_per_s"}
        return out | {"steps_per_s": s["steps_per_s"] / other["steps_per_s"]}

    ratios = over_store(o) | {f"e2e_{k}": v for k, v in over_store(e).items()}
    rows = [[SIDES[k], *(f(v[key]) for key, _, f in COLUMNS)] for k, v in sides.items()]
    rows.append(["**ratio** end-to-end / store (store / end-to-end for steps/s)",
                 *(f"**{fmt(ratios['e2e_' + key])}×**" for key, _, _ in COLUMNS)])  # fmt: skip
    rows.append(["**ratio** online / store (store / online for steps/s)",
                 *(f"**{fmt(ratios[key])}×**" for key, _, _ in COLUMNS)])  # fmt: skip
    probe = "CUDA max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"
    notes = [
        f"{p['image']}×{p['image']}×3 frames, past + future = {p['past'] + p['future']}, batch "
        f"{p['batch']}; lstm-delta hidden {p['hidden']} × {p['layers']} layers; DRNET encoder "
        f"width {p['width']}, content {p['content']}, pose {p['pose']}",
        f"timed steps: store {s['steps']}, online {o['steps']}, after {p['warmup']} warm-up steps "
        f"each; memory: {probe} of each side's fresh process above its ready state",
        "saved for backward + gradients: the bytes autograd keeps for one step's backward pass "
        "(each storage once, parameters left out) plus the trained parameters' gradients; the "
        "activations alone, the same on any device, free of allocator and page-cache noise",
    ]
    notes.append(
        f"end-to-end baseline: {e['parameters'] / 1e6:.2f} M parameters (DRNET-sized encoder and "
        "decoder + the predictor's LSTM), the observed frames through the encoder and every "
        "predicted frame through the decoder with gradients, pixel MSE on the future frames; its "
        "gradients and activations count in its peak"
    )
    if not (s["peak_reset"] and o["peak_reset"]):
        notes.append("the peak-RSS mark could not be reset here: setup transients may count")
    table_text = table(["side", *(title for _, title, _ in COLUMNS)], rows)
    memory_target = {64: "≥ 100 (64×64)", 128: "≥ 300 (128×128)"}.get(p["image"], "—")
    targets = {"e2e_first_bytes": memory_target, "e2e_steps_per_s": "≥ 30"}
    title = "1. Stage-2 memory and speed: latent store vs an end-to-end pixel model and re-encoding"
    return result("stage2_memory", title, size, device, p, sides, ratios, [table_text],
                  targets=targets, notes=notes)  # fmt: skip


def main() -> None:
    parser = arg_parser(__doc__)
    parser.add_argument("--child", choices=list(SIDES), help="internal: train one side, print JSON")
    parser.add_argument("--workdir", type=Path, help="(with --child) the fabricated inputs")
    parser.add_argument("--image", type=int, help="frame side (default: the size's, 64)")
    parser.add_argument("--batch", type=int, help="windows per step (default: the size's, 32)")
    args = parse(parser)
    if args.child:
        device = pick_device(args.device)
        p = params_for(args.size, device, args.image, args.batch)
        print(json.dumps(child(args.child, args.workdir, p, device)))
        return
    emit(run(args.size, args.device, args.image, args.batch), args.json)


if __name__ == "__main__":
    main()
