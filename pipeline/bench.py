"""`vidlat bench`: run the benchmark scripts and append their tables to a Markdown file.

Each benchmark is a module of the installed package, vidlat.benchmarks.NAME (benchmarks/NAME.py in
the checkout), run in a fresh Python subprocess as `python -m vidlat.benchmarks.NAME --json`; its
last stdout line is its result dict (see benchmarks/common.py). A subprocess per benchmark rather
than an import, because: one benchmark's threads, allocator high-water mark or CUDA caches never
colour another's numbers, and the scripts run by hand exactly as they run here. It works from a
wheel as from a checkout; results go to --out (default benchmarks.md in the current folder),
never into the installed package.
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

PACKAGE = "vidlat.benchmarks"
DEFAULT_DOC = Path("benchmarks.md")  # in the current folder; docs/benchmarks.md in the checkout
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
    name: str,
    size: str,
    device: str,
    threads: int | None = None,
    package: str = PACKAGE,
    extra: tuple[str, ...] = (),
) -> dict:
    """Run benchmark `name` (the module package.NAME) at `size` on `device` in a subprocess; its
    result dict. threads: torch threads of every process it starts (None: torch's default);
    extra: more of the script's own options (e.g. stage2_memory's --image 128)."""
    cmd = [sys.executable, "-m", f"{package}.{name}", "--size", size, "--device", device, "--json"]
    cmd += (["--threads", str(threads)] if threads else []) + list(extra)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # its stderr shows progress
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise VidlatError(
            f"benchmark {name} failed (exit code {proc.returncode}); run `{' '.join(cmd[1:])}` "
            "to see its output"
        )
    return json.loads(lines[-1])


# The registry is also the --only choices; each runner takes (size, device, threads=None).
BENCHMARKS: dict[str, Runner] = {
    name: functools.partial(run_script, name)
    for name in (
        "stage2_memory",
        "data_path",
        "encode_speed",
        "store_size",
        "time_to_quality",
        "ssim_speed",
    )
}


def run_benchmarks(
    quick: bool = False,
    device: str = "auto",
    only: Sequence[str] | None = None,
    size: str | None = None,
    threads: int | None = None,
    image: int | None = None,
    batch: int | None = None,
) -> list[dict[str, Any]]:
    """Run the benchmarks named in `only` (default: all, in registry order); their result dicts.

    size: "quick" when `quick`, else "default"; "micro" (tests) may be given explicitly.
    threads: CPU threads of every process (None: torch's default, one per core).
    image, batch: stage2_memory's frame side and batch instead of its size's (that one only).
    """
    size = size or ("quick" if quick else "default")
    if size not in SIZES:
        raise ConfigError(f"benchmark size {size!r} is not one of {', '.join(SIZES)}")
    names = [n.replace("-", "_") for n in (only or BENCHMARKS)]
    if unknown := [n for n in names if n not in BENCHMARKS]:
        raise ConfigError(f"unknown benchmark {unknown}; choose from {', '.join(BENCHMARKS)}")
    extra = tuple(f for flag, v in (("--image", image), ("--batch", batch)) if v
                  for f in (flag, str(v)))  # fmt: skip
    if extra and names != ["stage2_memory"]:
        raise ConfigError(
            "--image and --batch set benchmark 1's frame side and batch only; run them with "
            "--only stage2_memory"
        )
    return [
        BENCHMARKS[name](size, device, threads=threads, **({"extra": extra} if extra else {}))
        for name in names
    ]


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


def format_result(res: dict[str, Any], images: Sequence[str] = ()) -> str:
    """A result as markdown: heading, conditions, notes, tables, targets, then `images` (paths of
    its plots, relative to the markdown file)."""
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
        lines += ["", f"Targets: {targets}."]
    for image in images:
        lines += ["", f"![{Path(image).stem}]({image})"]
    return "\n".join(lines)


def draw_plots(folder: Path, res: dict[str, Any], when: dt.datetime) -> list[str]:
    """Draw the result's plots (see benchmarks/common.py result) as PNGs in `folder`/images, named
    by benchmark, plot and date so that runs never overwrite each other; their relative paths."""
    from vidlat.pipeline.plots import line_plot

    paths = []
    for plot in res.get("plots", []):
        name = f"images/bench_{res['name']}_{plot['name']}_{when:%Y%m%d_%H%M}.png"
        line_plot(folder / name, plot["series"], title=plot["title"], xlabel=plot["xlabel"],
                  ylabel=plot["ylabel"], x=plot["x"])  # fmt: skip
        paths.append(name)
    return paths


def append_results(
    path: str | Path,
    results: Sequence[dict[str, Any]],
    command: str,
    machine: str | None = None,
    when: dt.datetime | None = None,
) -> Path:
    """Append a section (machine, date, command, every result) to the markdown file at `path`;
    the results' plots go to PNGs in images/ beside it, linked from the section."""
    path = Path(path)
    when = when or dt.datetime.now(dt.timezone.utc)
    images = [draw_plots(path.parent, res, when) for res in results]
    section = [
        f"## {when:%Y-%m-%d %H:%M} UTC: `{command}`",
        "",
        f"- machine: {machine or machine_description()}",
        f"- date: {when.isoformat(timespec='seconds')}",
        f"- command: `{command}`",
        *("\n" + format_result(res, pngs) for res, pngs in zip(results, images, strict=True)),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.is_file() else DOC_HEADER
    path.write_text(text.rstrip("\n") + "\n\n" + "\n".join(section) + "\n")
    return path
