"""Retention: the personal data of settled claims and old rights answers is purged.

What stays of a purged claim is the pseudonymous accounting record: ids, amounts,
statuses, operator, dates. Its payload is emptied and its keyed hashes (NIR,
beneficiary, request) are cleared. Failed claims are purged like settled ones once
retention is over (operations staff had `retention_days` to look at them); queued and
pending claims never are: they still have to be sent. Then every data key that no
record uses any more, in a month that is over or retired by a rotation an hour ago,
is shredded.

On SQLite the purge runs with `secure_delete` and is followed by a WAL checkpoint,
so the erased values do not linger in free pages or in the write-ahead log.

The scheduled job finds the claims to purge in a read, then purges them in a write that
checks each again: the search reads every settled claim ever kept, and in the write it
held up every claim's intake for as long (the writer is one, on SQLite and, through the
group lock, on PostgreSQL).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import anyio.to_thread
import structlog
from sqlalchemy import ColumnElement, delete, select, text, update
from sqlmodel import col

from gateway.audit.trail import SYSTEM, AuditLog
from gateway.context import AppContext
from gateway.security.apikeys import Principal
from gateway.security.envelope import shred
from gateway.settings import Settings
from gateway.storage.db import Database, is_sqlite
from gateway.storage.models import (
    Claim,
    ClaimHistory,
    ConsoleSession,
    DataKey,
    LoginThrottle,
    Receipt,
    RightsCacheEntry,
    RightsLookup,
    utcnow,
)
from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)
PURGEABLE_STATUSES = ("accepted", "rejected", "cancelled", "failed")
PURGE_LOCK = 0x70757267  # "purg": one purge at a time across instances (PostgreSQL)
SHRED_GRACE = timedelta(days=2)  # a month's key is shredded only well after the month ends
RETIRED_GRACE = timedelta(hours=1)  # a rotated key unused this long after its retirement too
CHUNK = 500
LOGIN_ROWS_KEPT = timedelta(days=2)  # longer than any login window (at most a day)
SESSIONS_KEPT = timedelta(days=8)  # longer than any session lives (at most a week)
FIRST_RUN_S = 60.0
EVERY_S = 3600.0


class PurgeCounts(TypedDict):
    claims: int
    rights_cache: int
    data_keys: int


@dataclass(frozen=True, slots=True)
class PurgeReport:
    claims: int
    rights_cache: int
    data_keys: int
    shredded: tuple[str, ...] = ()

    def counts(self) -> PurgeCounts:
        return {"claims": self.claims, "rights_cache": self.rights_cache,
                "data_keys": self.data_keys}


def purge(
    session: UnitOfWork, *, now: datetime, retention_days: int, rights_cache_days: int,
    candidates: list[str] | None = None,
) -> PurgeReport:
    """Purge what the policy says, in the caller's transaction; return the counts.
    `candidates`: the claims `purge_candidates` found, in a read before this write (else
    they are looked for here); each is purged only if it still qualifies."""
    session.lock(PURGE_LOCK)
    if session.serialized:  # SQLite: purged rows are overwritten on disk
        session.execute(text("PRAGMA secure_delete=ON"))
    cutoff = now - timedelta(days=retention_days)
    claims = _purge_claims(session, candidates if candidates is not None
                           else purge_candidates(session, cutoff=cutoff), cutoff=cutoff, now=now)
    rights = session.changed(delete(RightsCacheEntry).where(
        col(RightsCacheEntry.as_of) < now - timedelta(days=rights_cache_days)))
    _purge_login_bookkeeping(session, now)
    unused = _unused_data_keys(session, now)
    shredded = shred(session, unused, now=now)
    if session.serialized:
        session.execute(text("PRAGMA secure_delete=OFF"))
    return PurgeReport(claims, rights, shredded, tuple(unused))


def _purgeable(cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    return (col(Claim.status).in_(PURGEABLE_STATUSES), col(Claim.updated_at) < cutoff,
            col(Claim.purged_at).is_(None), col(Claim.cancellation_pending).is_(False))


def purge_candidates(session: UnitOfWork, *, cutoff: datetime) -> list[str]:
    """The claims whose personal data is due for purging. No index leads to them: this
    reads every settled claim ever kept (90–139 ms at 300,000 on SQLite), so the scheduled
    job runs it in a read, which does not hold up the claims' writes."""
    return list(session.execute(select(col(Claim.id)).where(*_purgeable(cutoff))).scalars())


def _purge_claims(session: UnitOfWork, candidates: list[str], *, cutoff: datetime,
                  now: datetime) -> int:
    """Purge the candidates that still qualify (one may have moved since it was found)."""
    purged = 0
    for start in range(0, len(candidates), CHUNK):
        rows = session.execute(
            update(Claim).where(col(Claim.id).in_(candidates[start:start + CHUNK]),
                                *_purgeable(cutoff))
            .values(payload_enc=b"", nir_hash="", beneficiary_hash="", request_hash="",
                    data_key_id=None, purged_at=now)
            .returning(col(Claim.id), col(Claim.status)),
            execution_options={"synchronize_session": False},
        ).all()
        ids = [row.id for row in rows]
        session.execute(
            update(Receipt).where(col(Receipt.claim_id).in_(ids)).values(beneficiary_hash=""),
            execution_options={"synchronize_session": False},
        )
        session.add_all([ClaimHistory(claim_id=row.id, status=row.status, at=now,
                                      detail="personal data purged (retention)")
                         for row in rows])
        purged += len(rows)
    return purged


def _purge_login_bookkeeping(session: UnitOfWork, now: datetime) -> None:
    """Login windows, console sessions and rights-budget cells long over: one row per
    address or person ever seen would otherwise grow without end (an attacker rotating
    addresses makes it grow fast), even once lookups stop."""
    session.execute(delete(RightsLookup).where(col(RightsLookup.period) < f"{now:%Y-%m-%d}"))
    session.execute(delete(LoginThrottle).where(
        col(LoginThrottle.window_started_at) < now - LOGIN_ROWS_KEPT))
    session.execute(delete(ConsoleSession).where(
        (col(ConsoleSession.ended_at) < now - LOGIN_ROWS_KEPT)
        | (col(ConsoleSession.created_at) < now - SESSIONS_KEPT)))


def _unused_data_keys(session: UnitOfWork, now: datetime, *, retired_before: datetime | None = None,
                      retired_only: bool = False) -> list[str]:
    """Live data keys no record refers to, whose month is over or that were retired (before
    `retired_before`, by default RETIRED_GRACE ago): no new record will use them."""
    by_claims = select(col(Claim.data_key_id)).where(col(Claim.data_key_id).is_not(None))
    by_rights = select(col(RightsCacheEntry.data_key_id)).where(
        col(RightsCacheEntry.data_key_id).is_not(None))
    rows = session.execute(select(col(DataKey.id), col(DataKey.scope), col(DataKey.created_at),
                                  col(DataKey.retired_at)).where(
        col(DataKey.wrapped).is_not(None),
        col(DataKey.id).not_in(by_claims), col(DataKey.id).not_in(by_rights),
    )).all()
    cutoff = retired_before or now - RETIRED_GRACE
    return [row.id for row in rows
            if (row.retired_at is not None and row.retired_at <= cutoff)
            or (not retired_only and month_over(row.scope, row.created_at, now))]


def shred_retired(session: UnitOfWork, *, now: datetime, retired_before: datetime) -> list[str]:
    """After a re-encryption: shred the DEKs retired before `retired_before` that no record
    uses any more (securely erased on SQLite, as by the purge)."""
    if session.serialized:  # SQLite
        session.execute(text("PRAGMA secure_delete=ON"))
    unused = _unused_data_keys(session, now, retired_before=retired_before, retired_only=True)
    shred(session, unused, now=now)
    if session.serialized:
        session.execute(text("PRAGMA secure_delete=OFF"))
    return unused


def month_over(scope: str, created_at: datetime, now: datetime) -> bool:
    """Whether the month a scope names (`...:YYYY-MM`, else its creation's) is long over."""
    try:
        start = datetime.strptime(scope.rsplit(":", 1)[-1], "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        start = created_at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0,
                                                   microsecond=0)
    next_month = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return now >= next_month + SHRED_GRACE


def purge_audited(
    session: UnitOfWork, settings: Settings, *, now: datetime, actor: Principal,
    audit_log: AuditLog, audit_empty: bool = True, candidates: list[str] | None = None,
) -> PurgeReport:
    """The policy of these settings, audited in the same transaction."""
    report = purge(session, now=now, retention_days=settings.retention_days,
                   rights_cache_days=settings.provisional.rights_cache_days,
                   candidates=candidates)
    if audit_empty or any(report.counts().values()):
        audit_log.append(session, actor, "retention.purge", **report.counts())
    return report


def wipe_wal(db: Database) -> None:
    """SQLite: copy the log into the file and truncate it, so erased values leave the disk."""
    if not is_sqlite(db.url):
        return
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    finally:
        raw.close()


async def purge_once(
    ctx: AppContext, *, audit_log: AuditLog | None = None, now: datetime | None = None,
) -> PurgeReport:
    """One run of the job: purge (audited when it did something), forget shredded keys,
    wipe the log."""
    when = now or utcnow()
    trail = audit_log or AuditLog.from_settings(ctx.settings)
    cutoff = when - timedelta(days=ctx.settings.retention_days)
    candidates = await ctx.db.read(lambda session: purge_candidates(session, cutoff=cutoff))
    report = await ctx.db.write(lambda session: purge_audited(
        session, ctx.settings, now=when, actor=SYSTEM, audit_log=trail, audit_empty=False,
        candidates=candidates))
    ctx.cipher.forget(report.shredded)
    await anyio.to_thread.run_sync(wipe_wal, ctx.db)
    log.info("retention.purged", **report.counts())
    return report


async def run_retention(
    ctx: AppContext, stopping: asyncio.Event, *, audit_log: AuditLog | None = None,
    first_run_s: float = FIRST_RUN_S, every_s: float = EVERY_S,
) -> None:
    """The scheduled job: a minute after start, then hourly; a failed run waits for the next."""
    delay = first_run_s
    while not await _stopped_within(stopping, delay):
        try:
            audit_log = audit_log or AuditLog.from_settings(ctx.settings)
            await purge_once(ctx, audit_log=audit_log)
        except Exception as exc:  # noqa: BLE001 - the job must outlive a failed run
            log.error("retention.failed", error_type=type(exc).__name__)
        delay = every_s


async def _stopped_within(stopping: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except TimeoutError:
        return False
    return True
