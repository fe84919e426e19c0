"""`gateway queue ...`: the operations verbs of the API (`/v1/operators`) from the shell.

They act on the database directly (no running gateway needed) and are audited
under the shell user's name. No personal data is printed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from gateway.audit.trail import AuditLog, cli_actor
from gateway.cli import handover
from gateway.cli.support import ConfigOption, fail, migrated_settings
from gateway.errors import GatewayError
from gateway.ops.schemas import ReplayRequest
from gateway.ops.service import Operations
from gateway.queue import repository
from gateway.security.apikeys import Principal
from gateway.settings import ConfigError, Settings
from gateway.storage.db import Database
from gateway.storage.unit import UnitOfWork

T = TypeVar("T")
queue_app = typer.Typer(help="List, pause, resume, replay and hand over operators' queues.",
                        no_args_is_help=True)


def actor() -> Principal:
    """The shell user, as audited (`cli:<user>`); `gateway.cli.security` uses it too."""
    return cli_actor()


def run(settings: Settings, work: Callable[[UnitOfWork], T]) -> T:
    database = Database(settings.database_url)
    try:
        return database.write_now(work)
    except GatewayError as exc:
        raise fail(exc.detail) from None
    finally:
        database.engine.dispose()


def act(settings: Settings, verb: Callable[[Operations], Awaitable[T]]) -> T:
    """Run one operations verb against the database, as the API would (no drain to wake
    here: the running gateways' drains find the claims at their next step)."""
    async def acting() -> T:
        database = Database(settings.database_url)
        try:
            return await verb(Operations(database, audit_log_of(settings)))
        finally:
            await database.dispose()
    try:
        return asyncio.run(acting())
    except GatewayError as exc:
        raise fail(exc.detail) from None


def audit_log_of(settings: Settings) -> AuditLog:
    try:
        return AuditLog.from_settings(settings)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None


def known(settings: Settings, operator: str) -> str:
    if settings.operator(operator) is None:
        raise fail(f"no operator {operator!r} in the configuration")
    return operator


@queue_app.command("list")
def list_queue(
    operator: Annotated[str | None, typer.Argument(help="show this operator's claims")] = None,
    config: ConfigOption = None,
) -> None:
    """Per operator: paused, queued, pending, failed; or one operator's claims."""
    settings = migrated_settings(config)
    if operator is None:
        def board(session: UnitOfWork) -> list[str]:
            depth = repository.depth(session)
            lines = []
            for op in settings.operators:
                stats = depth.get(op.name) or repository.no_depth()
                control = repository.control(session, op.name)
                lines.append(
                    f"{op.name}\tpaused={'yes' if control.paused else 'no'}"
                    f"\tqueued={stats['queued']}\tpending={stats['pending']}"
                    f"\tfailed={stats['failed']}\texported={stats['exported']}"
                    f"\toldest={stats['oldest'] or '-'}")
            return lines

        lines = run(settings, board)
    else:
        name = known(settings, operator)
        lines = [
            f"{c.id}\t{c.invoice_number}\t{c.status}\tattempts={c.attempts}"
            f"\tqueued_at={c.queued_at.isoformat() if c.queued_at else '-'}"
            f"\t{c.last_error or '-'}"
            for c in run(settings, lambda s: repository.queue_of(s, name, limit=10000,
                                                                 after_id=None))
        ]
    for line in lines:
        typer.echo(line)


@queue_app.command("pause")
def pause(
    operator: str,
    reason: Annotated[str, typer.Option(help="why (shown to operations staff)")] = "",
    config: ConfigOption = None,
) -> None:
    """Send nothing to OPERATOR until resumed: new claims are queued."""
    settings = migrated_settings(config)
    name = known(settings, operator)
    act(settings, lambda operations: operations.pause(name, actor=actor(), reason=reason))
    typer.echo(f"paused {name}")


@queue_app.command("resume")
def resume(operator: str, config: ConfigOption = None) -> None:
    """Resume sending to OPERATOR."""
    settings = migrated_settings(config)
    name = known(settings, operator)
    act(settings, lambda operations: operations.resume(name, actor=actor()))
    typer.echo(f"resumed {name}")


@queue_app.command("replay")
def replay(
    operator: str,
    status: Annotated[str | None, typer.Option(help="failed or queued")] = None,
    ids: Annotated[str | None, typer.Option(help="claim ids, comma-separated")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only count")] = False,
    config: ConfigOption = None,
) -> None:
    """Requeue OPERATOR's failed (or queued) claims; the drain sends them throttled."""
    settings = migrated_settings(config)
    name = known(settings, operator)
    if status not in (None, "failed", "queued"):
        raise fail("--status must be failed or queued")
    claim_ids = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
    # status is one of ReplayRequest's, checked above
    request = ReplayRequest(status=status, claim_ids=claim_ids, dry_run=dry_run)  # type: ignore[arg-type]
    replay_id, count = act(settings, lambda operations: operations.replay(
        name, actor=actor(), request=request))
    typer.echo(f"{'would requeue' if dry_run else 'requeued'} {count} claim(s)"
               + (f" (replay {replay_id})" if replay_id else ""))


queue_app.command("export")(handover.export_command)
queue_app.command("export-again")(handover.export_again_command)
queue_app.command("batches")(handover.batches_command)
queue_app.command("import-acks")(handover.import_acks_command)
queue_app.command("release")(handover.release_command)
