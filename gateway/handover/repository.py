"""Every query of the hand-over: taking queued claims out of the live queue, the batches
and their claims.

A claim is taken only while `queued` (so never while the drain holds it: a lease makes
it `pending`), oldest first, locked with FOR UPDATE SKIP LOCKED on PostgreSQL (a claim
the drain is leasing at that instant is skipped, not waited for) and moved by one UPDATE
guarded by that status; on SQLite the IMMEDIATE transaction serialises both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, update
from sqlmodel import col, select

from gateway.storage.models import (
    Claim,
    HandoverBatch,
    HandoverClaim,
    new_row,
    table_of,
)
from gateway.storage.unit import UnitOfWork

_CLAIMS = table_of(Claim)
_QUEUED = _CLAIMS.select().where(
    _CLAIMS.c.operator == bindparam("operator"), _CLAIMS.c.status == "queued",
).order_by(_CLAIMS.c.queued_at, _CLAIMS.c.id).limit(bindparam("limit")).with_for_update(
    skip_locked=True)


def oldest_queued(session: UnitOfWork, operator: str, limit: int) -> list[Claim]:
    """The operator's oldest queued claims, locked (plain rows: not tracked by the ORM)."""
    rows = session.connection().execute(_QUEUED, {"operator": operator, "limit": limit})
    return [new_row(Claim, **row._mapping) for row in rows]


def take(session: UnitOfWork, claim_ids: Sequence[str], *, status: str, now: datetime) -> int:
    """Move these claims from `queued` to `status`; how many were still queued. ORM objects
    of them the session holds are expired: read again, they say `status`."""
    if not claim_ids:
        return 0
    taken = session.changed(update(_CLAIMS).where(
        _CLAIMS.c.id.in_(list(claim_ids)), _CLAIMS.c.status == "queued",
    ).values(status=status, lease_owner=None, lease_until=None, updated_at=now))
    session.expire_rows(Claim, claim_ids)  # a cancel later in the group must see `status`
    return taken


def add_batch(session: UnitOfWork, batch: HandoverBatch, claim_ids: Sequence[str]) -> None:
    session.add(batch)
    session.flush()  # the batch row before the rows that name it (foreign keys)
    session.add_all(HandoverClaim(batch_id=batch.id, claim_id=claim_id, position=index)
                    for index, claim_id in enumerate(claim_ids))


def batch(session: UnitOfWork, batch_id: str, *, for_update: bool = False
          ) -> HandoverBatch | None:
    query = select(HandoverBatch).where(col(HandoverBatch.id) == batch_id)
    if for_update:
        query = query.with_for_update()
    return session.exec(query).first()


def batches(session: UnitOfWork, operator: str, limit: int) -> list[HandoverBatch]:
    return list(session.exec(
        select(HandoverBatch).where(col(HandoverBatch.operator) == operator)
        .order_by(col(HandoverBatch.id).desc()).limit(limit)).all())


def claims_of(session: UnitOfWork, batch_id: str, *, status: str | None = None,
              for_update: bool = False) -> list[Claim]:
    """The batch's claims in file order (only those with `status`, when given)."""
    query = (select(Claim).join(HandoverClaim, col(HandoverClaim.claim_id) == col(Claim.id))
             .where(col(HandoverClaim.batch_id) == batch_id)
             .order_by(col(HandoverClaim.position)))
    if status is not None:
        query = query.where(col(Claim.status) == status)
    if for_update:
        query = query.with_for_update()
    return list(session.exec(query).all())


def count_in(session: UnitOfWork, batch_id: str, status: str) -> int:
    query: Any = (select(func.count()).select_from(HandoverClaim)
                  .join(Claim, col(Claim.id) == col(HandoverClaim.claim_id))
                  .where(col(HandoverClaim.batch_id) == batch_id, col(Claim.status) == status))
    return int(session.exec(query).one())
