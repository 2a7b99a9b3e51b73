"""`vidlat bench`: measure what the latent store saves; tables printed and added to a doc file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

import typer

from vidlat.pipeline.bench import BENCHMARKS, DEFAULT_DOC, append_results, run_benchmarks

# The registry is the list of choices (an Enum: Typer takes no list of Literal).
BenchName = Enum("BenchName", {name: name for name in BENCHMARKS}, type=str)


def bench(
    *,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Small sizes that finish in a few minutes on a 2-core CPU: a check."
        ),
    ] = False,
    device: Annotated[
        Literal["auto", "cpu", "cuda"],
        typer.Option(
            "--device", help="Where both sides of every benchmark run (auto: CUDA if present)."
        ),
    ] = "auto",
    only: Annotated[
        list[BenchName] | None,
        typer.Option("--only", help="Run this benchmark only; repeat for several (default: all)."),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads of every process (default: one per core). On a machine busy with "
            "other work, 1 keeps threads from stalling on each other.",
        ),
    ] = None,
    image: Annotated[
        int | None,
        typer.Option("--image", min=8, help="stage2_memory only: frame side (default: 64)."),
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option("--batch", min=1, help="stage2_memory only: windows per step (default: 32)."),
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "--out-doc",
            help="Markdown file the results are appended to (created if missing); curves "
            "(time_to_quality) go to PNGs in images/ beside it, linked from the section.",
            dir_okay=False,
        ),
    ] = DEFAULT_DOC,
) -> None:
    """Benchmark the latent store against its baselines, both sides on the same device.

    [bold]stage2_memory[/bold]  store vs an end-to-end pixel model and re-encoding: memory, steps/s
    [bold]data_path[/bold]      Zarr store (in memory, streaming) vs the same tensors in RAM
    [bold]encode_speed[/bold]   vidlat encode vs a bare encoder loop; 1 vs 2 worker processes
    [bold]store_size[/bold]     bytes/frame of float32/float16 stores vs pixels; float16's error
    [bold]time_to_quality[/bold] two-stage pipeline vs the end-to-end pixel model at equal seconds
    [bold]ssim_speed[/bold]     the separable float32 SSIM vs the former float64 convolution

    Each runs as its own process (python -m vidlat.benchmarks.NAME); results go to --out.

    Example: [bold]vidlat bench --quick --device cpu --only data_path --out bench.md[/bold]
    """
    names = [name.value for name in only or []]
    results = run_benchmarks(quick=quick, device=device, only=names or None, threads=threads,
                             image=image, batch=batch)  # fmt: skip
    command = " ".join(
        ["vidlat bench", *(["--quick"] if quick else []), f"--device {device}"]
        + ([f"--threads {threads}"] if threads else [])
        + [f"--only {name}" for name in names]
        + [f"--{k} {v}" for k, v in (("image", image), ("batch", batch)) if v]
    )
    for res in results:
        typer.echo(f"\n{res['title']}  [{res['size']}, {res['device']}]")
        for text in res["tables"]:
            typer.echo("\n" + text)
    path = append_results(out, results, command)
    typer.echo(f"\nappended to {path}")
