"""`gateway audit verify [--anchor FILE]`: walk the audit chain, its signed heads and the heads
anchored outside the database; exit 1 naming the first broken entry (and every forged
anchor line). `gateway audit public-key`: the head key to publish beside the anchors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gateway.audit.anchors import read_anchor_lines
from gateway.audit.heads import HeadSigner, head_keys_of, verify_anchors, verify_settings
from gateway.audit.trail import AuditLog
from gateway.cli.support import ConfigOption, fail, migrated_settings, settings_or_exit
from gateway.settings import ConfigError
from gateway.storage.db import Database

audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


@audit_app.callback()
def _group() -> None:
    """Audit trail commands."""


@audit_app.command("verify")
def verify_command(
    config: ConfigOption = None,
    anchor: Annotated[Path | None, typer.Option(
        "--anchor", help="a file of anchored heads ([audit] anchor_file, or a copy): each "
        "must hold against the chain")] = None,
) -> None:
    """Check every entry's hash, link and seal, and every signed head; exit 1 at the first
    altered, missing, moved or forged entry, or a tail cut behind an anchored head."""
    settings = migrated_settings(config)
    database = Database(settings.database_url)
    try:
        if anchor is None:
            result, forged, note = verify_settings(settings, database), [], ""
        else:
            lines = read_anchor_lines(anchor)
            keys, audit_log = head_keys_of(settings), AuditLog.from_settings(settings)
            report = database.read_now(lambda s: verify_anchors(
                s, lines, audit_log=audit_log, keys=keys))
            result, forged = report.result, report.forged
            note = (f"; {report.checked} anchored head(s) hold"
                    + (f" ({report.others} of other deployments ignored)" if report.others
                       else ""))
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None
    except OSError as exc:
        raise fail(f"--anchor: {exc.strerror or exc}") from None
    finally:
        database.engine.dispose()
    for line in forged:
        typer.echo(f"error: {line}", err=True)
    if not result.ok:
        raise fail(f"audit entry {result.first_broken_id}: {result.problem} "
                   f"({result.checked} entries verified before it)")
    if forged:
        raise typer.Exit(1)
    typer.echo(f"audit trail intact: {result.checked} entries{note}")


@audit_app.command("public-key")
def public_key_command(config: ConfigOption = None) -> None:
    """The audit head key's public JWK: publish it with the anchors (it verifies them)."""
    settings = settings_or_exit(config)
    try:
        signer = HeadSigner.from_settings(settings)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None
    typer.echo(json.dumps(signer.public_jwk()))
