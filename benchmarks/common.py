"""Shared helpers of the benchmark scripts: fabricated inputs, memory probes, timing, tables.

Every script in benchmarks/ (the package vidlat.benchmarks, run as `python -m
vidlat.benchmarks.NAME`) takes --size micro|quick|default, --device auto|cpu|cuda and --json,
builds what it measures in a temporary folder, and prints markdown tables whose last row is a ratio;
with --json it prints one JSON line instead, the result dict that `vidlat bench` records.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from vidlat.progress import set_quiet
from vidlat.stages.common.runtime import resolve_device

SIZES = ("micro", "quick", "default")
_LOAD_AT_START = os.getloadavg()[0]  # other work on the machine skews timings: recorded with them


def arg_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options every script shares; scripts add their own, then call `parse`."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--size", choices=SIZES, default="default", help="micro: tests only")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    parser.add_argument("--threads", type=int, help="CPU threads per process (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print one JSON line, no tables")
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line; apply --threads to this process and to the processes it starts
    (OMP_NUM_THREADS: dask's worker processes, the sides' subprocesses)."""
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    set_quiet(True)  # progress bars would mix into the tables and the JSON line
    return args


def log(text: str) -> None:
    """Progress for the person waiting: stderr, so stdout stays the tables or the JSON line."""
    print(text, file=sys.stderr, flush=True)


# -- fabricated inputs -----------------------------------------------------------------------------


def make_videos(folder: Path, *, videos: int, frames: int, image: int, seed: int = 0) -> Path:
    """Synthetic sprite videos (V, T, image, image, 3) at `folder`/videos.zarr (2 sprites; 1 larger
    one below 32 pixels, where the default sprite sizes would be under 4 pixels)."""
    from vidlat.pipeline.sources.synth import SynthConfig, make_synth

    small = {"objects": 1, "object_size": (0.25, 0.4)} if image < 32 else {}
    cfg = SynthConfig(
        videos=videos, frames=frames, size=image, seed=seed, videos_per_chunk=8, **small
    )
    return make_synth(cfg, folder / "videos.zarr")


def make_ae(
    folder: Path,
    data: Path,
    *,
    width: int,
    content: int,
    pose: int,
    steps: int = 0,
    batch: int = 32,
    device: str = "cpu",
    name: str = "ae",
) -> Path:
    """A DRNET run folder; steps=0 keeps the initial weights (speed and memory do not depend on
    them)."""
    from vidlat.stages.training.train_ae import TrainAEConfig, train_ae
    from vidlat.store.videos import open_videos

    params = {"width": width, "content_dim": content, "pose_dim": pose}
    cfg = TrainAEConfig(
        model_params=params,
        steps=steps,
        batch_size=batch,
        device=device,
        sample_every=0,
        log_every=max(1, steps),
        checkpoint_every=max(1, steps),
    )
    return train_ae(open_videos(data), cfg, folder / name)


def make_store(
    folder: Path,
    data: Path,
    ae: Path,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    name: str = "latents.zarr",
) -> Path:
    """Encode `data` with `ae` into a latent store at `folder`/`name` (vidlat encode's defaults)."""
    from vidlat.stages.inference.encode import EncodeConfig, encode

    return encode(data, ae, folder / name, EncodeConfig(device=device, dtype=dtype))


def predictor_config(p: dict, device: torch.device, **extra: Any):
    """The main paper's lstm-delta predictor at a benchmark's sizes (past, future, batch, hidden,
    layers in `p`), seed 0 unless `extra` says otherwise."""
    from vidlat.stages.training.train_predictor import DEFAULT_LR, TrainPredictorConfig

    sizes = {"past": p["past"], "future": p["future"], "batch_size": p["batch"]}
    sizes |= {"hidden": p["hidden"], "layers": p["layers"], "seed": 0, "lr": DEFAULT_LR}
    return TrainPredictorConfig(kind="lstm-delta", device=device.type, **(sizes | extra))


def step_context(optimizers: dict, device: torch.device):
    """The StepContext of a single-process training step (no DDP, no mixed precision)."""
    from vidlat.stages.common.distributed import direct
    from vidlat.stages.common.runtime import Amp
    from vidlat.stages.training.loop import StepContext

    return StepContext(optimizers, Amp(device, "off"), direct)


def folder_bytes(path: Path) -> int:
    """Bytes of every file under `path` (a Zarr folder: chunks and metadata)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# -- memory ----------------------------------------------------------------------------------------


def _status(key: str) -> int:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}; the CPU memory probe needs Linux")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Collect garbage and hand free heap pages back to the kernel (glibc), so that RSS shows live
    memory: otherwise a freed block stays resident and the next step's activations reuse it unseen.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory above the moment `start()` is called, in bytes.

    CUDA: torch.cuda.max_memory_allocated() minus memory_allocated() at start (tensors only, exact).
    CPU: the process's peak resident set (VmHWM, reset at start) minus its resident set at start,
    after a heap trim; `exact` is False where the peak mark cannot be reset (then setup transients
    may count too).
    """

    def __init__(self, device: torch.device):
        self.device, self.base, self.exact = device, 0, True

    def start(self) -> None:
        sync(self.device)
        if self.device.type == "cuda":
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        trim_heap()
        self.base = _status("VmRSS")
        self.exact = reset_peak_rss()

    def rise(self) -> int:
        sync(self.device)
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self.base
        return max(0, _status("VmHWM") - self.base)


class SavedForBackward:
    """Bytes autograd keeps for the backward pass while `with` runs: the activations of a step, on
    any device, without the allocator's or the process's noise. Each storage counts once (views
    and tensors saved by several ops share it); the parameters' own storages are left out (they
    exist before and after the step)."""

    def __init__(self, parameters):
        self.skip = {q.untyped_storage().data_ptr() for q in parameters}
        self.sizes: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.skip:
            self.sizes[storage.data_ptr()] = storage.nbytes()
        return tensor

    def __enter__(self) -> SavedForBackward:
        self.sizes = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)

    @property
    def bytes(self) -> int:
        return sum(self.sizes.values())


def materialise_optimizers(model: torch.nn.Module, optimizers: dict) -> None:
    """Create the optimisers' state now, as loading a checkpoint would: Adam given zero gradients
    makes a zero update, so the weights stay as they are and only its moment buffers appear."""
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    for optimizer in optimizers.values():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


# -- timing ----------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], n: int, device: torch.device) -> float:
    """Seconds for `n` calls of `fn`, the device synchronised before and after only."""
    sync(device)
    start = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return time.perf_counter() - start


def device_label(device: torch.device) -> str:
    """E.g. 'cpu (2 threads, x86_64)' or 'cuda (NVIDIA H100 80GB HBM3)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.machine()})"


def pick_device(name: str) -> torch.device:
    return resolve_device(name)


# -- results ---------------------------------------------------------------------------------------


def fmt(x: float, digits: int = 3) -> str:
    """A number with `digits` significant digits, no exponent for everyday magnitudes."""
    if x is None or not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag >= 6 or mag < -3:
        return f"{x:.{digits - 1}e}"
    return f"{x:.{max(0, digits - 1 - mag)}f}"


def mib(n: float) -> str:
    return fmt(n / 2**20)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table; cells are str() of the values, pipes escaped."""

    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [line(columns), "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += [line(row) for row in rows]
    return "\n".join(lines)


def result(
    name: str,
    title: str,
    size: str,
    device: torch.device,
    params: dict[str, Any],
    sides: dict[str, dict[str, Any]],
    ratios: dict[str, float],
    tables: list[str],
    targets: dict[str, str] | None = None,
    notes: Sequence[str] = (),
    plots: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The result dict every script returns: every side's numbers, the ratios, the tables.

    plots: curves `vidlat bench` draws as PNGs beside its --out file, each a dict of name, title,
    xlabel, ylabel, x (list) and series (label -> list), as pipeline.plots.line_plot takes them."""
    return {
        "name": name,
        "title": title,
        "size": size,
        "device": device_label(device),
        "params": params,
        "sides": sides,
        "ratios": ratios,
        "targets": targets or {},
        "tables": tables,
        "notes": list(notes),
        "plots": list(plots),
        "load_average": [round(_LOAD_AT_START, 2), round(os.getloadavg()[0], 2)],
        "cpu_count": os.cpu_count(),
    }


def emit(res: dict[str, Any], as_json: bool) -> None:
    """Print the result: one JSON line, or the title, notes and tables."""
    if as_json:
        print(json.dumps(res))
        return
    print(f"## {res['title']}  [{res['size']}, {res['device']}]")
    start, end = res["load_average"]
    print(f"- load average {start} at start, {end} at end, on {res['cpu_count']} CPUs")
    for note in res["notes"]:
        print(f"- {note}")
    for text in res["tables"]:
        print("\n" + text)


def run_child(module: str, args: Sequence[str]) -> dict[str, Any]:
    """Run `python -m module` with `args` in a fresh process; its last stdout line, as JSON."""
    cmd = [sys.executable, "-m", module, *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr goes to ours
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
