"""`gateway purge` and `gateway keys rotate-data-key`: retention and key rotation.

Both act on the database directly (no running gateway needed), each step in a
transaction with its audit entry, under the shell user's name. Nothing personal is
printed. `rotate-data-key --reencrypt` runs in small batches beside running gateways.
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from gateway.audit.trail import AuditLog, cli_actor
from gateway.cli.support import ConfigOption, fail, migrated_settings
from gateway.security.crypto import Cipher, DecryptionError
from gateway.security.envelope import DataKeyStore, master_kid, retire_data_keys, rewrap_data_keys
from gateway.security.keyring import KeyRing, load_keyring
from gateway.security.reencrypt import (
    BATCH,
    SETTLE_S,
    last_retirement,
    reencrypt_all,
    retired_keys,
)
from gateway.settings import ConfigError, Settings
from gateway.storage.db import Database
from gateway.storage.models import utcnow
from gateway.storage.retention import PurgeReport, purge_audited, shred_retired, wipe_wal
from gateway.storage.unit import UnitOfWork

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

    def work(session: UnitOfWork) -> PurgeReport:
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


def rotate_data_key_command(
    config: ConfigOption = None,
    reencrypt: Annotated[bool, typer.Option(
        "--reencrypt", help="then move every record to a fresh data key, in batches, and "
        "shred the retired keys; run again after an interruption: it resumes")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = BATCH,
    settle_s: Annotated[float, typer.Option(
        "--settle-s", min=0, help="how long running gateways may still use a retired key "
        "(they look every 5 s)")] = SETTLE_S,
) -> None:
    """Re-wrap every data key under the current master and retire it: new records get new
    data keys. With --reencrypt, old records follow."""
    settings = migrated_settings(config)
    try:
        keyring = load_keyring(settings)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None
    audit_log = audit_log_of(settings)
    database = Database(settings.database_url)
    try:
        rewrapped, retired = database.write_now(
            lambda session: _rotate(session, keyring, audit_log, resume=reencrypt))
        typer.echo(f"re-wrapped {rewrapped} data key(s) under master key "
                   f"{master_kid(keyring.data_key)}")
        if retired is None:
            typer.echo("resuming the unfinished rotation: its retired keys still hold records")
        else:
            typer.echo(f"retired {retired} data key(s): new records use new ones")
        if reencrypt:
            _reencrypt(database, keyring, audit_log, batch_size=batch_size, settle_s=settle_s)
    except DecryptionError as exc:
        raise fail(f"{exc}; add its master key to previous_data_keys and retry") from None
    except SQLAlchemyError as exc:
        raise fail(f"database: {type(exc).__name__}") from None
    finally:
        database.engine.dispose()


def _rotate(session: UnitOfWork, keyring: KeyRing, audit_log: AuditLog, *,
            resume: bool) -> tuple[int, int | None]:
    """Re-wrap, then retire every live key; with `resume`, a rotation whose retired keys
    are still live is finished instead (None: nothing retired), unless the master changed."""
    count = rewrap_data_keys(session, keyring)
    if resume and count == 0 and retired_keys(session):
        return count, None
    retired = retire_data_keys(session, now=utcnow())
    audit_log.append(session, cli_actor(), "keys.rotate_data_key", count=count,
                     retired=retired, master_kid=master_kid(keyring.data_key))
    return count, retired


def _reencrypt(database: Database, keyring: KeyRing, audit_log: AuditLog, *,
               batch_size: int, settle_s: float) -> None:
    """Every record onto a current key, then the retired keys nobody uses are shredded."""
    cipher = Cipher(keyring, DataKeyStore(database, keyring))
    tally = reencrypt_all(database, cipher, batch_size=batch_size, settle_s=settle_s,
                          echo=typer.echo)
    retired_at = database.read_now(last_retirement) or utcnow()

    def finish(session: UnitOfWork) -> list[str]:
        shredded = shred_retired(session, now=utcnow(), retired_before=retired_at)
        audit_log.append(session, cli_actor(), "keys.reencrypt", reencrypted=tally.reencrypted,
                         unreadable=tally.unreadable, shredded=len(shredded))
        return shredded

    shredded = database.write_now(finish)
    cipher.forget(shredded)
    wipe_wal(database)
    typer.echo(f"re-encrypted {tally.reencrypted} record(s); {tally.unreadable} unreadable "
               f"left as they are; shredded {len(shredded)} retired data key(s)")


security_app.command("purge")(purge_command)
security_app.command("rotate-data-key")(rotate_data_key_command)
