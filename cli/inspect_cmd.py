"""`vidlat inspect PATH`: what a dataset, latent store or run folder holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidlat.errors import StoreError

TOLERANCE = 1e-3  # float16 stores round latents to ~1e-3 relative; float32 ones match to ~1e-6


def inspect(
    path: Annotated[Path, typer.Argument(help="A dataset, latent store or run folder.")],
    *,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Decode every chunk and check latents are finite (damaged chunks are listed and "
            "the exit code is 1); a latent store also re-encodes a random sample of videos.",
        ),
    ] = False,
) -> None:
    """Print shapes, fields and roles, split sizes, provenance, completeness and size on disk.

    Example: [bold]vidlat inspect runs/demo/latents.zarr --verify[/bold]
    """
    from vidlat.pipeline.inspect import damaged_chunks, describe

    rows = describe(path)
    width = max(len(label) for label, _ in rows)
    typer.echo(str(path))
    for label, text in rows:
        typer.echo(f"  {label:<{width}}  {text}")
    if not verify:
        return
    damage, repair = damaged_chunks(path)
    for d in damage:
        typer.echo(f"  damaged  {d}")
    if damage:
        raise StoreError(f"{path} has {len(damage)} damaged chunk(s), listed above; {repair}")
    if repair:  # a dataset or store (a run folder has no chunks)
        typer.echo("  verify: every chunk decodes")
    if rows[0][1].startswith("latent store"):
        from vidlat.pipeline.commands import verify_store  # the encoder, so torch: only here

        diffs = verify_store(path)
        for name, diff in diffs.items():
            typer.echo(f"  verify {name:<{width - 7}}  relative max |stored - fresh| = {diff:.2e}")
        worst = max(diffs.values())
        if worst > TOLERANCE:
            raise StoreError(f"{path} does not match its encoder (max difference {worst:.2e})")
        typer.echo("  verify: the store matches a fresh encode")
