"""Options shared by several commands, so each has one name, one help text and one behaviour,
and the step every command takes first: flags to its config.

Nothing here imports pydantic, torch or the pipeline at start-up: `vidlat --help` and tab
completion build the app from these modules alone (tests/test_cli_help.py checks it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

if TYPE_CHECKING:
    from vidlat.config import Config

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="YAML or JSON file of config fields; flags given on the command line win over it.",
        exists=False,
        dir_okay=False,
    ),
]
Select = Annotated[
    Literal["best", "latest"] | None,
    typer.Option(
        "--select",
        help="Predictor checkpoint: best (lowest validation future error; the default) or latest.",
    ),
]
Context = Annotated[
    int | None,
    typer.Option(
        "--context",
        help="Observed frames whose skips a stage-1 model with U-Net skips averages (default 1).",
        min=1,
    ),
]
Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="KEY=VALUE for any config field, dotted for nested ones "
        "(--set lr=1e-3 --set model_params.width=32); repeatable; typed flags win over it.",
        metavar="KEY=VALUE",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output instead of refusing.")
]


def resolve(command: str, config: Path | None, sets: list[str] | None, **flags: Any) -> Config:
    """`command`'s config (its class and file section as pipeline.configs names them) from the
    --config file, then --set KEY=VALUE, then each flag given (None: not given)."""
    from vidlat.config import resolve_config
    from vidlat.pipeline.configs import config_class

    cls, section = config_class(command)
    return resolve_config(cls, config, section=section, sets=sets, **flags)


def apply_quiet(quiet: bool) -> None:
    """Silence progress bars for this process when --quiet was given."""
    from vidlat.progress import set_quiet

    set_quiet(quiet)


def say(message: str) -> None:
    """Print a closing message once: under torchrun only rank 0 speaks."""
    if os.environ.get("RANK", "0") == "0":
        typer.echo(message)
