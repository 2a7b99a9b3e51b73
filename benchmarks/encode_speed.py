"""Benchmark 3: end-to-end `vidlat encode` vs a bare loop of the encoder's forward pass.

Both encode the same frames with the same stage-1 model, batch size and device:
- bare: the frames already in memory, a loop of (uint8 batch -> device -> float -> model.encode)
  and nothing else: the ceiling for any encode pipeline;
- vidlat encode: the whole command as a user runs it (stages.encode.encode): weights hash, store
  creation, dask tasks that read chunks of videos, encode, align, compress and write, the
  completion flag. The ratio takes 1 dask thread, one stream of encoder calls like the bare loop;
  2 threads (the default) and 1 and 2 worker processes show the scaling on this machine.
Runs are interleaved (bare, threads, ..., then again) and each side's best run counts, the usual
estimator of a machine's uncontended time. The model is an untrained DRNET of the sizes asked:
speed does not depend on the weights.

Run: python benchmarks/encode_speed.py [--size quick] [--device cpu] [--json]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from vidlat.benchmarks.common import (
    arg_parser,
    emit,
    fmt,
    log,
    make_ae,
    make_videos,
    parse,
    pick_device,
    result,
    sync,
    table,
)

# fmt: off
KEYS = ("image", "videos", "frames", "width", "content", "pose", "repeats")
SIZES = {  # one row per size, a column per KEYS entry
    "micro":    (16,  8,  4,  4,   8,  3, 1),
    "quick":    (32, 64, 16, 64, 128, 10, 1),
    "default":  (64, 256, 32, 64, 128, 10, 2),
}
# default: 8192 frames, 32 chunks, so that starting worker processes (each imports torch and loads
# the model: seconds) is a small part of a run, as it is of a real dataset's encode
# fmt: on
GPU_SIZE = {
    "videos": 256,
    "frames": 32,
    "repeats": 3,
}  # a GPU encodes a few thousand frames a second
BATCH = 256  # frames per forward pass: EncodeConfig's default
SIDES = {
    "bare": "bare encoder loop (frames in memory)",
    "threads1": "vidlat encode, 1 dask thread",
    "threads2": "vidlat encode, 2 dask threads (the default)",
    "processes1": "vidlat encode, 1 worker process (all cores' torch threads)",
    "processes1_half": "vidlat encode, 1 worker process with the threads each of 2 gets",
    "processes2": "vidlat encode, 2 worker processes",
}
# name -> (dask scheduler, workers, each worker's torch threads: None = encode's default) of the
# end-to-end runs; "half" is resolved in end_to_end
SCHEDULERS = {
    "threads1": ("threads", 1, None),
    "threads2": ("threads", None, None),
    "processes1": ("processes", 1, None),
    "processes1_half": ("processes", 1, "half"),
    "processes2": ("processes", 2, None),
}


def bare_loop(ae: Path, data: Path, device: torch.device) -> float:
    """Seconds to encode every frame of `data`, already in memory, with nothing around it."""
    from vidlat.stages.common.runtime import frames_to_device, inference_layout
    from vidlat.stages.load import load_run
    from vidlat.store.videos import open_videos

    model, _ = load_run(ae, "stage1", device)
    videos = open_videos(data)
    frames = videos.read(slice(None))
    flat = torch.from_numpy(frames.reshape(-1, *frames.shape[2:]))  # (V*T, H, W, C) uint8
    layout = inference_layout(device)  # as encode: channels_last on the CPU
    with torch.inference_mode():
        model.encode(frames_to_device(flat[:BATCH], device, layout))  # warm-up
        sync(device)
        start = time.perf_counter()
        for i in range(0, len(flat), BATCH):
            model.encode(frames_to_device(flat[i : i + BATCH], device, layout))
        sync(device)
    return time.perf_counter() - start


def end_to_end(side: str, ae: Path, data: Path, out: Path, device: torch.device) -> float:
    """Seconds of one whole `vidlat encode` into a new store."""
    from vidlat.stages.inference.encode import EncodeConfig, encode, worker_threads

    scheduler, workers, threads = SCHEDULERS[side]
    if threads == "half":  # what each of 2 worker processes gets: the like-for-like single one
        threads = worker_threads(EncodeConfig(scheduler="processes", workers=2))
    cfg = EncodeConfig(batch_size=BATCH, scheduler=scheduler, workers=workers,
                       threads_per_worker=threads, device=device.type)  # fmt: skip
    start = time.perf_counter()
    encode(data, ae, out, cfg)
    return time.perf_counter() - start


def measure(size: str, p: dict, device: torch.device) -> dict[str, list[float]]:
    """Seconds of every run, per side, in interleaved rounds. Micro (tests) skips the worker
    processes: starting them alone takes seconds."""
    sides = [k for k in SIDES if size != "micro" or not k.startswith("processes")]
    seconds: dict[str, list[float]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory(prefix="vidlat-bench-") as tmp:
        folder = Path(tmp)
        log(f"encode_speed [{size}]: fabricating videos and an encoder")
        data = make_videos(folder, videos=p["videos"], frames=p["frames"], image=p["image"])
        ae = make_ae(folder, data, width=p["width"], content=p["content"], pose=p["pose"])
        for r in range(p["repeats"]):
            for side in sides:
                log(f"encode_speed [{size}]: round {r + 1}/{p['repeats']}, {side}")
                if side == "bare":
                    seconds[side].append(bare_loop(ae, data, device))
                else:
                    out = folder / f"latents-{side}-{r}.zarr"  # a new store: no deletion timed
                    seconds[side].append(end_to_end(side, ae, data, out, device))
    return seconds


def run(size: str, device_name: str) -> dict:
    device = pick_device(device_name)
    p = dict(zip(KEYS, SIZES[size], strict=True))
    if device.type == "cuda" and size != "micro":
        p.update(GPU_SIZE)
    n = p["videos"] * p["frames"]
    sides = {
        k: {"seconds": min(v), "frames": n, "frames_per_s": n / min(v), "runs": v}
        for k, v in measure(size, p, device).items()
    }
    fps = {k: v["frames_per_s"] for k, v in sides.items()}
    ratios = {"end_to_end": fps["threads1"] / fps["bare"]}
    ratio_text = f"**{fmt(ratios['end_to_end'])}**"
    if "processes2" in fps:
        ratios["processes_2_vs_1"] = fps["processes2"] / fps["processes1"]
        ratios["processes_2_vs_1_same_threads"] = fps["processes2"] / fps["processes1_half"]
        ratio_text += (f"; **{fmt(ratios['processes_2_vs_1'])}×**, "
                       f"**{fmt(ratios['processes_2_vs_1_same_threads'])}×**")  # fmt: skip
    rows = [
        [SIDES[k], n, fmt(v["seconds"]), fmt(fps[k]), fmt(fps[k] / fps["bare"])]
        for k, v in sides.items()
    ]
    rows.append(
        [
            "**ratio** vidlat encode (1 thread) / bare; 2 / 1 processes (all cores' threads, the "
            "same threads per process)",
            "",
            "",
            "",
            ratio_text,
        ]
    )
    notes = [
        f"{p['videos']} videos × {p['frames']} frames of {p['image']}×{p['image']}×3, 8 videos per "
        f"chunk (a dask task each); DRNET width {p['width']}, content {p['content']}, pose "
        f"{p['pose']}; {BATCH} frames per forward pass",
        f"best of {p['repeats']} interleaved runs per row; end-to-end times include starting the "
        "worker processes and loading the model in each",
        "the ratio compares like with like: one stream of encoder calls in both (each using the "
        "process's torch threads); 2 dask threads or processes add parallelism over chunks",
        "2 vs 1 processes twice: against 1 process given every core's torch threads (what "
        "`--workers 1` gets), and against 1 process with the threads each of the 2 gets (the "
        "scaling over workers at a fixed size of worker)",
    ]
    text = table(["run", "frames", "best s", "frames/s", "vs bare"], rows)
    title = "3. Encode: vidlat encode end to end vs a bare encoder loop"
    return result("encode_speed", title, size, device, p, sides, ratios, [text],
                  targets={"end_to_end": "≥ 0.9", "processes_2_vs_1_same_threads": "≥ 1.7"},
                  notes=notes)  # fmt: skip


def main() -> None:
    args = parse(arg_parser(__doc__))
    emit(run(args.size, args.device), args.json)


if __name__ == "__main__":
    main()
