"""The `vidlat` Typer app: registers the commands; a VidlatError becomes one line and exit 1."""

from __future__ import annotations

import sys
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from vidlat import __version__
from vidlat.cli import (
    bench,
    commands,
    config_cmd,
    data,
    evaluate_cmd,
    generator_cmd,
    inspect_cmd,
)
from vidlat.cli.help import VidlatCommand
from vidlat.errors import VidlatError


class VidlatGroup(TyperGroup):
    """The package's exception is caught here only: a user mistake is a message, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VidlatError as exc:
            typer.secho(f"error: {exc}", err=True, fg="red")
            raise typer.Exit(1) from None


app = typer.Typer(
    name="vidlat",
    cls=VidlatGroup,
    help="Cheap video prediction: frame autoencoders, a Zarr latent store, LSTMs on latents.",
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(data.app, name="data")
app.add_typer(config_cmd.app, name="config")
app.command("train-ae", cls=VidlatCommand)(commands.train_ae_cmd)
app.command("encode", cls=VidlatCommand)(commands.encode_cmd)
app.command("train-predictor", cls=VidlatCommand)(commands.train_predictor_cmd)
app.command("generate", cls=VidlatCommand)(commands.generate_cmd)
app.command("train-generator", cls=VidlatCommand)(generator_cmd.train_generator_cmd)
app.command("evaluate", cls=VidlatCommand)(evaluate_cmd.evaluate_cmd)
app.command("run", cls=VidlatCommand)(evaluate_cmd.run_cmd)
app.command("report", cls=VidlatCommand)(evaluate_cmd.report_cmd)
app.command("inspect", cls=VidlatCommand)(inspect_cmd.inspect)
app.command("bench", cls=VidlatCommand)(bench.bench)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vidlat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = None,
) -> None:
    """Train video predictors cheaply: stage 1 encodes frames once into a Zarr latent store,
    stage 2 trains LSTMs on the store alone, never touching pixels."""


def main() -> None:
    """Console-script entry point. A torchrun worker leaves through distributed.exit_rank (see
    there why); every other process exits as Typer has it."""
    try:
        app()
    except SystemExit as exc:
        # Only distributed.setup joins torchrun: a process that never imported that module (any
        # --help, tab completion, a data command) has nothing to leave and imports no torch here.
        if "vidlat.stages.common.distributed" in sys.modules:
            from vidlat.pipeline.commands import leave_if_rank

            leave_if_rank(exc.code)  # returns at once outside torchrun
        raise
