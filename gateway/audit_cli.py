"""`gateway audit verify`: walk the audit chain and its signed heads; exit 1 naming the
first broken entry."""

from __future__ import annotations

import typer

from gateway.audit_heads import verify_settings
from gateway.cli_support import ConfigOption, fail, migrated_settings
from gateway.db import Database
from gateway.settings import ConfigError

audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


@audit_app.callback()
def _group() -> None:
    """Audit trail commands."""


@audit_app.command("verify")
def verify_command(config: ConfigOption = None) -> None:
    """Check every entry's hash, link and seal, and every signed head; exit 1 at the first
    altered, missing, moved or forged entry."""
    settings = migrated_settings(config)
    database = Database(settings.database_url)
    try:
        result = verify_settings(settings, database)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None
    finally:
        database.engine.dispose()
    if not result.ok:
        raise fail(f"audit entry {result.first_broken_id}: {result.problem} "
                   f"({result.checked} entries verified before it)")
    typer.echo(f"audit trail intact: {result.checked} entries")
