"""Every query on rights: the cache (one encrypted answer per pharmacy, beneficiary and
insurer) and the people counted in the lookup budgets (`rights_lookups`)."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from gateway.storage.models import RightsCacheEntry, RightsLookup, table_of
from gateway.storage.unit import UnitOfWork

Cell = tuple[str, str]  # (scope, period) of a budget
PURGE_LOCK = zlib.crc32(b"rights_lookups:purge")


def cache_context(finess: str, beneficiary_hash: str, insurer_number: str) -> str:
    """What an entry's encryption is bound to: moved to another pharmacy's row, it opens
    no more."""
    return f"rights:{finess}:{beneficiary_hash}:{insurer_number}"


def get(
    session: UnitOfWork, *, finess: str, beneficiary_hash: str, insurer_number: str,
    not_before: datetime,
) -> RightsCacheEntry | None:
    """This pharmacy's cached answer; another pharmacy's is never read."""
    return session.execute(select(RightsCacheEntry).where(
        col(RightsCacheEntry.finess) == finess,
        col(RightsCacheEntry.beneficiary_hash) == beneficiary_hash,
        col(RightsCacheEntry.insurer_number) == insurer_number,
        col(RightsCacheEntry.as_of) >= not_before,
    )).scalars().first()


def put(
    session: UnitOfWork, *, finess: str, beneficiary_hash: str, insurer_number: str,
    answer_enc: bytes, as_of: datetime, data_key_id: str | None,
) -> None:
    entry = session.execute(select(RightsCacheEntry).where(
        col(RightsCacheEntry.finess) == finess,
        col(RightsCacheEntry.beneficiary_hash) == beneficiary_hash,
        col(RightsCacheEntry.insurer_number) == insurer_number,
    )).scalars().first() or RightsCacheEntry(
        finess=finess, beneficiary_hash=beneficiary_hash, insurer_number=insurer_number,
        answer_enc=answer_enc, as_of=as_of,
    )
    entry.answer_enc, entry.as_of, entry.data_key_id = answer_enc, as_of, data_key_id
    session.add(entry)


# --- the lookup budgets --------------------------------------------------------------

_LOOKUPS = table_of(RightsLookup)


def _in_cells(cells: Iterable[Cell]) -> ColumnElement[bool]:
    return or_(*(and_(_LOOKUPS.c.scope == scope, _LOOKUPS.c.period == period)
                 for scope, period in cells))


def lock_scopes(session: UnitOfWork, scopes: Sequence[str]) -> None:
    """PostgreSQL: one counter at a time per scope, in a fixed order (no deadlock), until
    the transaction ends; SQLite's IMMEDIATE transaction already serialises."""
    for scope in sorted(scopes):
        session.lock(f"rights_lookups:{scope}")


def counted_in(session: UnitOfWork, *, subject: str, cells: Sequence[Cell]) -> set[Cell]:
    """The cells that already count this person."""
    rows = session.execute(select(_LOOKUPS.c.scope, _LOOKUPS.c.period).where(
        _LOOKUPS.c.subject == subject, _in_cells(cells))).all()
    return {(row.scope, row.period) for row in rows}


def counts(session: UnitOfWork, *, cells: Sequence[Cell]) -> dict[Cell, int]:
    """Distinct people counted in each cell (absent: none)."""
    rows = session.execute(
        select(_LOOKUPS.c.scope, _LOOKUPS.c.period, func.count())
        .where(_in_cells(cells)).group_by(_LOOKUPS.c.scope, _LOOKUPS.c.period)).all()
    return {(scope, period): int(count) for scope, period, count in rows}


def count_in(session: UnitOfWork, *, subject: str, cells: Sequence[Cell]) -> None:
    """Insert if absent: a person already counted in a cell is not counted twice."""
    values = [{"scope": scope, "period": period, "subject": subject} for scope, period in cells]
    session.execute(session.insert(_LOOKUPS).values(values).on_conflict_do_nothing())


def forget_before(session: UnitOfWork, day: str) -> None:
    """Delete the cells of the days before `day` (hours sort after their day's label, so
    an hour label `YYYY-MM-DDTHH` of an earlier day is below it too). On PostgreSQL one
    instance at a time; the others skip it this time."""
    if not session.try_lock(PURGE_LOCK):
        return
    session.execute(delete(_LOOKUPS).where(_LOOKUPS.c.period < day))


def forget_scopes(session: UnitOfWork, scopes: Sequence[str]) -> None:
    """Start these budgets afresh (a lifted suspension)."""
    session.execute(delete(_LOOKUPS).where(_LOOKUPS.c.scope.in_(scopes)))
