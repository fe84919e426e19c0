"""`gateway queue export | export-again | batches | import-acks | release`: the batch
hand-over from the shell (docs/handover.md), on the database directly, audited under
the shell user's name. No personal data is printed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from gateway.audit.trail import AuditLog, cli_actor
from gateway.cli.support import ConfigOption, fail, migrated_settings
from gateway.errors import GatewayError
from gateway.handover.files import write_whole
from gateway.handover.service import Handover
from gateway.receipts.signing import ReceiptSigner
from gateway.security.crypto import Cipher
from gateway.security.envelope import DataKeyStore
from gateway.security.keyring import load_keyring
from gateway.settings import ConfigError, Settings
from gateway.storage.db import Database

T = TypeVar("T")
ToOption = Annotated[Path, typer.Option("--to", help="the file to write (must not exist)")]


def act(settings: Settings, verb: Callable[[Handover], Awaitable[T]]) -> T:
    """Run one hand-over verb against the database, as the API would."""
    async def acting() -> T:
        database = Database(settings.database_url)
        try:
            keyring = load_keyring(settings)
            handover = Handover(settings, database, Cipher(keyring, DataKeyStore(
                database, keyring)), ReceiptSigner(keyring.signing_key,
                                                   keyring.previous_signing_keys),
                AuditLog.from_settings(settings))
            return await verb(handover)
        finally:
            await database.dispose()
    try:
        return asyncio.run(acting())
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None
    except GatewayError as exc:
        for error in exc.errors or []:
            typer.echo(f"  {error['message']}", err=True)
        raise fail(exc.detail) from None


def _unwritten(batch_id: str, operator: str, to: Path, exc: OSError) -> typer.Exit:
    return fail(f"batch {batch_id} is exported but its file was not written ({exc}): "
                f"write it with `gateway queue export-again {operator} {batch_id} --to "
                f"FILE`, or put its claims back with `gateway queue release {operator} "
                f"{batch_id}`")


def export_command(
    operator: str, to: ToOption,
    max_claims: Annotated[int | None, typer.Option("--max", min=1,
                                                   help="at most this many claims")] = None,
    config: ConfigOption = None,
) -> None:
    """Hand OPERATOR's oldest queued claims over in a signed, encrypted batch file."""
    settings = migrated_settings(config)
    if to.exists() or not to.parent.is_dir():
        raise fail(f"{to}: exists already, or its folder does not")
    batch, text = act(settings, lambda h: h.export(operator, actor=cli_actor(),
                                                    max_claims=max_claims))
    try:
        write_whole(to, text)
    except OSError as exc:
        raise _unwritten(batch.id, operator, to, exc) from None
    typer.echo(f"exported {batch.count} claim(s) in batch {batch.id} to {to}")


def export_again_command(operator: str, batch_id: str, to: ToOption,
                         config: ConfigOption = None) -> None:
    """Write an exported batch's file again, from the database (same signed content)."""
    settings = migrated_settings(config)
    text = act(settings, lambda h: h.file_of(operator, batch_id, actor=cli_actor()))
    try:
        write_whole(to, text)
    except OSError as exc:
        raise _unwritten(batch_id, operator, to, exc) from None
    typer.echo(f"wrote batch {batch_id} to {to}")


def batches_command(operator: str, config: ConfigOption = None) -> None:
    """OPERATOR's latest batches: id, state, claims, settled, still exported, when, who."""
    settings = migrated_settings(config)
    for batch, left in act(settings, lambda h: h.batches(operator)):
        typer.echo(f"{batch.id}\t{batch.state}\tclaims={batch.count}\tsettled={batch.settled}"
                   f"\texported={left}\t{batch.created_at.isoformat()}\t{batch.created_by}")


def import_acks_command(
    operator: str,
    file: Annotated[Path, typer.Argument(help="the operator's acknowledgement file")],
    config: ConfigOption = None,
) -> None:
    """Settle the claims OPERATOR's signed acknowledgement file answers (all or none)."""
    settings = migrated_settings(config)
    try:
        text = file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"{file}: cannot be read ({type(exc).__name__})") from None
    done = act(settings, lambda h: h.import_acks(operator, text, actor=cli_actor()))
    typer.echo(f"batch {done.batch_id}: {done.accepted} accepted, {done.rejected} rejected, "
               f"{done.left} still awaiting acknowledgement")


def release_command(operator: str, batch_id: str, config: ConfigOption = None) -> None:
    """Put a batch's unacknowledged claims back in OPERATOR's queue (oldest first)."""
    settings = migrated_settings(config)
    count = act(settings, lambda h: h.release(operator, batch_id, actor=cli_actor()))
    typer.echo(f"released {count} claim(s) of batch {batch_id} back to the queue")
