"""`gateway purge` and `gateway keys rotate-data-key`: retention and master key rotation.

Both act on the database directly (no running gateway needed), in one transaction
with their audit entry, under the shell user's name. Nothing personal is printed.
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from gateway.audit import AuditLog, cli_actor
from gateway.cli_support import ConfigOption, fail, migrated_settings
from gateway.db import Database
from gateway.models import utcnow
from gateway.retention import PurgeReport, purge_audited, wipe_wal
from gateway.security.crypto import DecryptionError
from gateway.security.envelope import master_kid, rewrap_data_keys
from gateway.security.keyring import load_keyring
from gateway.settings import ConfigError, Settings

security_app = typer.Typer(help="Retention and data key rotation.", no_args_is_help=True)


def audit_log_of(settings: Settings) -> AuditLog:
    try:
        return AuditLog.from_settings(settings)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None


def purge_command(
    config: ConfigOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only count")] = False,
) -> None:
    """Apply the retention policy: purge old personal data, shred unused data keys."""
    settings = migrated_settings(config)
    audit_log = audit_log_of(settings)

    def work(session: Session) -> PurgeReport:
        savepoint = session.begin_nested() if dry_run else None
        report = purge_audited(session, settings, now=utcnow(), actor=cli_actor(),
                               audit_log=audit_log)
        if savepoint is not None:
            savepoint.rollback()
        return report

    database = Database(settings.database_url)
    try:
        report = database.write_now(work)
        if not dry_run:
            wipe_wal(database)
    except SQLAlchemyError as exc:
        raise fail(f"database: {type(exc).__name__}") from None
    finally:
        database.engine.dispose()
    counts = report.counts()
    typer.echo(f"{'would purge' if dry_run else 'purged'}: claims={counts['claims']} "
               f"rights_cache={counts['rights_cache']} data_keys_shredded={counts['data_keys']}")


def rotate_data_key_command(config: ConfigOption = None) -> None:
    """Re-wrap every data key under the current master key; no record is re-encrypted."""
    settings = migrated_settings(config)
    try:
        keyring = load_keyring(settings)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None
    audit_log = audit_log_of(settings)

    def work(session: Session) -> int:
        count = rewrap_data_keys(session, keyring)
        audit_log.append(session, cli_actor(), "keys.rotate_data_key", count=count,
                         master_kid=master_kid(keyring.data_key))
        return count

    database = Database(settings.database_url)
    try:
        count = database.write_now(work)
    except DecryptionError as exc:
        raise fail(f"{exc}; add its master key to previous_data_keys and retry") from None
    except SQLAlchemyError as exc:
        raise fail(f"database: {type(exc).__name__}") from None
    finally:
        database.engine.dispose()
    typer.echo(f"re-wrapped {count} data key(s) under master key "
               f"{master_kid(keyring.data_key)}")


security_app.command("purge")(purge_command)
security_app.command("rotate-data-key")(rotate_data_key_command)
