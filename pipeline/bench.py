"""`vidlat bench`: run the scripts of benchmarks/ and record their tables in docs/benchmarks.md.

Each benchmark is a script, benchmarks/NAME.py, run in a fresh Python subprocess with --json; its
last stdout line is its result dict (see benchmarks/common.py). A subprocess per benchmark rather
than an import, because: one benchmark's threads, allocator high-water mark or CUDA caches never
colour another's numbers; the scripts run by hand exactly as they run here; and the installed
package never imports benchmark code. The scripts live in the source checkout beside this folder,
so `vidlat bench` needs a checkout (pip install -e .), not just the wheel.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vidlat.errors import ConfigError, VidlatError

ROOT = Path(__file__).resolve().parents[1]  # the source checkout
BENCH_DIR = ROOT / "benchmarks"
DEFAULT_DOC = ROOT / "docs" / "benchmarks.md"
SIZES = ("micro", "quick", "default")  # micro: for the tests only

Runner = Callable[..., dict[str, Any]]  # (size, device, threads=None) -> result dict

DOC_HEADER = """# Benchmarks

What the latent store saves, measured by `vidlat bench` (scripts in `benchmarks/`, one fresh
process each). Every table compares two sides run on the same device with the same predictor,
batch and window; warm-up steps are never timed; the last row of each table is the ratio. Sections
are appended run by run, each with its machine, date and command, so figures from different
machines are never mixed. `--quick` sizes are for checking that everything runs; the default sizes
are the ones the targets refer to.
"""


def run_script(
    script: str, size: str, device: str, threads: int | None = None, bench_dir: Path | None = None
) -> dict:
    """Run benchmarks/`script` at `size` on `device` in a subprocess; its result dict.

    threads: torch threads of every process the benchmark starts (None: torch's default)."""
    path = Path(bench_dir or BENCH_DIR) / script
    if not path.is_file():
        raise VidlatError(
            f"{path} is missing: `vidlat bench` runs the scripts of a source checkout; clone the "
            "repository and install it with `pip install -e .`"
        )
    cmd = [sys.executable, str(path), "--size", size, "--device", device, "--json"]
    cmd += ["--threads", str(threads)] if threads else []
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # its stderr shows progress
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise VidlatError(
            f"benchmark {script} failed (exit code {proc.returncode}); run `{' '.join(cmd[1:])}` "
            "to see its output"
        )
    return json.loads(lines[-1])


# The registry is also the --only choices; each runner takes (size, device, threads=None).
BENCHMARKS: dict[str, Runner] = {
    name: functools.partial(run_script, f"{name}.py")
    for name in ("stage2_memory", "data_path", "encode_speed", "store_size")
}


def run_benchmarks(
    quick: bool = False,
    device: str = "auto",
    only: Sequence[str] | None = None,
    size: str | None = None,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Run the benchmarks named in `only` (default: all, in registry order); their result dicts.

    size: "quick" when `quick`, else "default"; "micro" (tests) may be given explicitly.
    threads: CPU threads of every process (None: torch's default, one per core).
    """
    size = size or ("quick" if quick else "default")
    if size not in SIZES:
        raise ConfigError(f"benchmark size {size!r} is not one of {', '.join(SIZES)}")
    names = [n.replace("-", "_") for n in (only or BENCHMARKS)]
    if unknown := [n for n in names if n not in BENCHMARKS]:
        raise ConfigError(f"unknown benchmark {unknown}; choose from {', '.join(BENCHMARKS)}")
    return [BENCHMARKS[name](size, device, threads=threads) for name in names]


def machine_description() -> str:
    """CPU model and cores, memory, GPU (or none), torch and Python versions."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal")))
        mem = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    gpu = (
        ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        if torch.cuda.is_available()
        else "no GPU"
    )
    return (
        f"{os.cpu_count()}-core {cpu}{mem}; {gpu}; torch {torch.__version__}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def format_result(res: dict[str, Any]) -> str:
    """A result as markdown: heading, conditions, notes, tables, targets."""
    start, end = res["load_average"]
    lines = [
        f"### {res['title']}",
        "",
        f"- size `{res['size']}`, device {res['device']}; load average {start} at start, {end} "
        f"at end, on {res['cpu_count']} CPUs",
        *(f"- {note}" for note in res["notes"]),
    ]
    for text in res["tables"]:
        lines += ["", text]
    if res["targets"]:
        targets = ", ".join(f"{k} {v}" for k, v in res["targets"].items())
        lines += ["", f"Targets (issue 5): {targets}."]
    return "\n".join(lines)


def append_results(
    path: str | Path,
    results: Sequence[dict[str, Any]],
    command: str,
    machine: str | None = None,
    when: dt.datetime | None = None,
) -> Path:
    """Append a section (machine, date, command, every result) to the markdown file at `path`."""
    path = Path(path)
    when = when or dt.datetime.now(dt.timezone.utc)
    section = [
        f"## {when:%Y-%m-%d %H:%M} UTC: `{command}`",
        "",
        f"- machine: {machine or machine_description()}",
        f"- date: {when.isoformat(timespec='seconds')}",
        f"- command: `{command}`",
        *("\n" + format_result(res) for res in results),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.is_file() else DOC_HEADER
    path.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n")
    return path
