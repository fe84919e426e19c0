"""Command groups whose commands are imported when invoked, not when the program starts.

Why: every command is a process of its own, and importing every command's module made
each one, `gateway simulator` and `gateway keys create` included, import the whole
gateway first (FastAPI, aiohttp, Redis, joserfc, the models...): ~2.7 s of CPU on a
2-core machine before doing anything. A lazy entry names the module and attribute of a
Typer app (a group) or of a command function; it is imported when that command runs, or
when the help lists it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import typer
import typer.main
from typer.core import TyperGroup

LazyEntries = Mapping[str, tuple[str, str]]  # name -> (module, attribute)


def lazy_group(entries: LazyEntries) -> type[TyperGroup]:
    """A `TyperGroup` class (for `typer.Typer(cls=...)`) that also holds `entries`."""

    class LazyGroup(TyperGroup):
        def list_commands(self, ctx: Any) -> list[str]:
            eager = super().list_commands(ctx)
            return eager + sorted(name for name in entries if name not in eager)

        def get_command(self, ctx: Any, cmd_name: str) -> Any:
            if cmd_name not in entries:
                return super().get_command(ctx, cmd_name)
            module, attribute = entries[cmd_name]
            target = getattr(importlib.import_module(module), attribute)
            if not isinstance(target, typer.Typer):  # a command function: its own app
                single = typer.Typer()
                single.command(cmd_name)(target)
                target = single
            command = typer.main.get_command(target)
            command.name = cmd_name
            return command

    return LazyGroup
