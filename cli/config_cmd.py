"""`vidlat config show COMMAND`: the full config a command would run with, as YAML."""

from __future__ import annotations

from typing import Annotated

import typer

from vidlat.cli.options import ConfigFile, Sets

app = typer.Typer(help="What commands are configured with.", no_args_is_help=True)


@app.command("show")
def show(
    command: Annotated[
        list[str],
        typer.Argument(help="A command, e.g. train-ae, generate, or data import (two words)."),
    ],
    sets: Sets = None,
    config: ConfigFile = None,
) -> None:
    """Print every field of COMMAND's config with its default, or with what --config FILE (its
    section of a whole-pipeline file) and --set KEY=VALUE give: a file to start from.

    Example: [bold]vidlat config show train-ae > ae.yaml[/bold], edit, then
    [bold]vidlat train-ae --config ae.yaml --data runs/videos.zarr --out runs/ae[/bold]
    """
    from vidlat.pipeline.configs import show_config

    typer.echo(show_config(" ".join(command), config, sets), nl=False)
