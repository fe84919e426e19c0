"""`gateway audit verify`: walk the audit chain; exit 1 naming the first broken entry."""

from __future__ import annotations

import typer

from gateway.audit import verify
from gateway.cli_support import ConfigOption, fail, migrated_settings
from gateway.db import Database

audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


@audit_app.callback()
def _group() -> None:
    """Audit trail commands."""


@audit_app.command("verify")
def verify_command(config: ConfigOption = None) -> None:
    """Check every entry's hash and link; exit 1 at the first altered or missing one."""
    settings = migrated_settings(config)
    database = Database(settings.database_url)
    try:
        result = database.read_now(verify)
    finally:
        database.engine.dispose()
    if not result.ok:
        raise fail(f"audit entry {result.first_broken_id}: {result.problem} "
                   f"({result.checked} entries verified before it)")
    typer.echo(f"audit trail intact: {result.checked} entries")
