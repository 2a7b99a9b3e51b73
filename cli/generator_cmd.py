"""`vidlat train-generator`: AVLAE on a latent store (unconditional latent sequences)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidlat.cli.commands import BatchSize, Device, Resume, Seed, Steps, Threads
from vidlat.cli.options import ConfigFile, Quiet, Sets, apply_quiet, resolve


def train_generator_cmd(
    *,
    latents: Annotated[Path, typer.Option("--latents", help="Latent store from `vidlat encode`.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder for checkpoints and metrics.")],
    frames: Annotated[
        int | None, typer.Option("--frames", help="Frames T of a generated sequence.", min=2)
    ] = None,
    steps: Steps = None,
    batch_size: BatchSize = None,
    device: Device = None,
    seed: Seed = None,
    threads: Threads = None,
    resume: Resume = False,
    sets: Sets = None,
    config: ConfigFile = None,
    quiet: Quiet = False,
) -> None:
    """Train AVLAE on the latent store alone: whole latent sequences from appearance and motion
    codes; metrics.jsonl logs the latent Fréchet distance to real sequences (latent_fd).

    Example: [bold]vidlat train-generator --latents runs/latents.zarr --out runs/gen[/bold]
    """
    from vidlat.pipeline.commands import train_generator

    apply_quiet(quiet)
    cfg = resolve(
        "train-generator",
        config,
        sets,
        frames=frames,
        steps=steps,
        batch_size=batch_size,
        device=device,
        seed=seed,
        threads=threads,
    )
    path = train_generator(latents, cfg, out, resume=resume)
    typer.echo(
        f"generator run in {path}; next: vidlat generate --ae AE --generator {path} "
        "--unconditional 8 --out DIR"
    )
