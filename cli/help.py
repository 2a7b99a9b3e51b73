"""Help that helps: each option shows the default its config field has (flags default to None so
a config file can win, which would hide it), and flags show no `<bool>` type."""

from __future__ import annotations

import json
from typing import Any

from typer.core import TyperCommand


def _default_text(value) -> str:
    """A default as a user would type it: true/false, plain numbers and words, JSON otherwise."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value)


class VidlatCommand(TyperCommand):
    """A Typer command whose --help reads its config's field defaults (pipeline/configs.py)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from vidlat.pipeline.configs import COMMAND_CONFIGS, REQUIRED, config_class, field_defaults

        command = " ".join(ctx.command_path.split()[1:])
        defaults = {}
        if command in COMMAND_CONFIGS:
            defaults = field_defaults(config_class(command)[0])
        for param in self.get_params(ctx):
            if param.param_type_name != "option":  # typer may bring its own click: no isinstance
                continue
            if param.is_flag:
                param.metavar = ""  # `--resume`, not `--resume <bool>`
            elif param.multiple and param.metavar is None:
                param.metavar = "<text>"  # repeatable: say so in the help, not list[str]
            value = defaults.get(param.name)
            if param.default is None and value not in (None, REQUIRED, [], {}):
                # Only the help sees this: Typer builds the command afresh for every run, and a
                # run parses with default None, so a --config file still wins over the default.
                param.default, param.show_default = _default_text(value), True
        super().format_help(ctx, formatter)
