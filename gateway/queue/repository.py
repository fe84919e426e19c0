"""Every query of the durable queue: leasing, rescheduling, depth, listing.

Rows are never deleted. A lease (`lease_owner`, `lease_until`) marks a claim being
sent (`pending`); a claim whose lease expired (its sender crashed, and may have sent
it) is swept back to the queue by `gateway.queue.abandoned` and looked up before it is
resent.
On PostgreSQL rows are locked with FOR UPDATE SKIP LOCKED, so several instances
lease disjoint claims; on SQLite the IMMEDIATE transaction serialises them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypedDict

from sqlalchemy import bindparam, func, update
from sqlmodel import col, select

from gateway.storage.models import Claim, OperatorControl, QueueDepth, new_row, table_of
from gateway.storage.unit import UnitOfWork

CATCH_UP_S = 1.0


@dataclass(frozen=True, slots=True)
class Lease:
    claim: Claim
    send_at: datetime


def control(session: UnitOfWork, operator: str, *, for_update: bool = False) -> OperatorControl:
    """The operator's control row, created on first use (safely when instances race)."""
    query = select(OperatorControl).where(col(OperatorControl.operator) == operator)
    if for_update:
        query = query.with_for_update()
    row = session.exec(query).first()
    if row is None:
        session.execute(session.insert(OperatorControl).values(operator=operator, paused=False)
                        .on_conflict_do_nothing(index_elements=["operator"]))
        row = session.exec(query.execution_options(populate_existing=True)).one()
    return row


_CONTROLS = table_of(OperatorControl)
# Core, not an ORM select (~150 µs more): read once per transaction that queues claims
_PAUSED = select(_CONTROLS.c.paused).where(_CONTROLS.c.operator == bindparam("operator"))


# What a read that runs anyway carries as a column, for `seed_paused` (NULL: no row yet)
PAUSED_FLAG = _PAUSED.scalar_subquery()


def is_paused(session: UnitOfWork, operator: str) -> bool:
    def read() -> bool:
        row = session.connection().execute(_PAUSED, {"operator": operator}).first()
        return bool(row and row.paused)

    return session.remember(("paused", operator), read)


def seed_paused(session: UnitOfWork, operator: str, paused: bool | None) -> None:
    """Hand over the pause flag (`PAUSED_FLAG`), read along with another query, so that
    `is_paused` in the same transaction needs no statement of its own."""
    session.remember(("paused", operator), lambda: bool(paused))



def drain_start(next_send_at: datetime | None, now: datetime) -> datetime:
    """When the next batch's first send may go.

    A schedule a little behind (a slow batch) catches up, by at most CATCH_UP_S; one
    further behind belongs to an earlier drain (the operator was down, the queue
    empty), and the drain starts now: never a burst of the backlog at recovery."""
    if next_send_at is None or next_send_at < now - timedelta(seconds=CATCH_UP_S):
        return now
    return next_send_at


def lease_batch(
    session: UnitOfWork, *, operator: str, owner: str, limit: int, now: datetime,
    interval_s: float, send_timeout_s: float,
) -> list[Lease]:
    """Lease the oldest due claims and give each a send time `interval_s` apart.

    The send times come from the operator's shared schedule (`next_send_at`), so
    every instance together stays under the operator's drain rate.
    """
    schedule = control(session, operator, for_update=True)
    # (claims left `pending` by a dead sender come back through the queue: see
    # gateway.queue.abandoned, which marks them to be looked up first)
    rows = session.connection().execute(_DUE, {
        "operator": operator, "now": now, "limit": limit}).all()
    if not rows:
        return []
    start = drain_start(schedule.next_send_at, now)
    # one lease end for the batch, its last send's: one UPDATE, not one per claim
    until = start + timedelta(seconds=(len(rows) - 1) * interval_s + send_timeout_s)
    session.changed(update(_CLAIMS).where(_CLAIMS.c.id.in_([row.id for row in rows]))
                    .values(status="pending", lease_owner=owner, lease_until=until))
    leases = []
    for index, row in enumerate(rows):
        # plain rows, not ORM-tracked: the drain reads them and settles by guarded UPDATEs
        claim = new_row(Claim, **{**row._mapping, "status": "pending", "lease_owner": owner,
                                  "lease_until": until})
        leases.append(Lease(claim, start + timedelta(seconds=index * interval_s)))
    schedule.next_send_at = start + timedelta(seconds=len(rows) * interval_s)
    session.add(schedule)
    return leases


_CLAIMS = table_of(Claim)
# Core, not the ORM: building and tracking 50 Claim objects per batch cost more than the
# query (the drain's lease runs ~20 times a second at 1,000 claims/s)
_DUE = _CLAIMS.select().where(
    _CLAIMS.c.operator == bindparam("operator"), _CLAIMS.c.status == "queued",
    _CLAIMS.c.next_attempt_at <= bindparam("now"),
).order_by(_CLAIMS.c.queued_at).limit(bindparam("limit")).with_for_update(skip_locked=True)


def make_due(session: UnitOfWork, operator: str, now: datetime) -> int:
    """After a recovery the whole backlog is due again, so it drains oldest first."""
    return session.changed(
        update(Claim)
        .where(col(Claim.operator) == operator, col(Claim.status) == "queued",
               col(Claim.next_attempt_at) > now)
        .values(next_attempt_at=now)
    )


def renew_lease(session: UnitOfWork, claim_id: str, owner: str, until: datetime) -> bool:
    """Extend our lease just before sending; False if it expired and another sender took it."""
    return bool(session.changed(
        update(Claim)
        .where(col(Claim.id) == claim_id, col(Claim.status) == "pending",
               col(Claim.lease_owner) == owner)
        .values(lease_until=until)
    ))


def load_leased(session: UnitOfWork, claim_id: str, owner: str) -> Claim | None:
    """The claim if this owner still holds its lease (else another sender took it over)."""
    claim = session.get(Claim, claim_id, with_for_update=True)
    if claim is None or claim.status != "pending" or claim.lease_owner != owner:
        return None
    return claim


def release_unsent(session: UnitOfWork, claim_ids: list[str], owner: str) -> int:
    """Give leased claims back to the queue untouched (breaker opened, paused, stopping)."""
    if not claim_ids:
        return 0
    return session.changed(
        update(Claim)
        .where(col(Claim.id).in_(claim_ids), col(Claim.status) == "pending",
               col(Claim.lease_owner) == owner)
        .values(status="queued", lease_owner=None, lease_until=None)
    )


class Depth(TypedDict):
    """One operator's queue: claims per status and the oldest queued instant."""

    queued: int
    pending: int
    failed: int
    exported: int
    oldest: datetime | None


def no_depth() -> Depth:
    return Depth(queued=0, pending=0, failed=0, exported=0, oldest=None)


def depth(session: UnitOfWork) -> dict[str, Depth]:
    """Per operator: queued, pending, failed and exported counts, the oldest queued instant.

    The counts are not counted here: `queue_depth` holds them, moved by triggers on
    `claims` in the transaction of every change (migration 0015), so they are exact at
    every commit and the same for every instance. This reads a few rows (one per
    operator and status, per slot on PostgreSQL) whatever the queue's size, then, for
    each operator with claims queued, its oldest one from the queue index
    (`ix_claims_queue`: operator, status, queued_at): one index probe each."""
    totals = session.exec(
        select(QueueDepth.operator, QueueDepth.status, func.sum(QueueDepth.claims))
        .group_by(col(QueueDepth.operator), col(QueueDepth.status))
    ).all()
    stats: dict[str, Depth] = {}
    for operator, status, count in totals:
        entry = stats.setdefault(operator, no_depth())
        if status == "queued":
            entry["queued"] = int(count)
        elif status == "pending":
            entry["pending"] = int(count)
        elif status == "failed":
            entry["failed"] = int(count)
        elif status == "exported":
            entry["exported"] = int(count)
    for operator, entry in stats.items():
        if entry["queued"]:
            entry["oldest"] = session.exec(_OLDEST, params={"operator": operator}).first()
    return stats


# ORDER BY ... LIMIT 1 rather than min(): both databases read the index's first entry
_OLDEST = (select(Claim.queued_at)
           .where(col(Claim.operator) == bindparam("operator"), col(Claim.status) == "queued",
                  col(Claim.queued_at).is_not(None))
           .order_by(col(Claim.queued_at)).limit(1))


def queue_of(session: UnitOfWork, operator: str, *, limit: int,
             after_id: str | None) -> list[Claim]:
    query = select(Claim).where(col(Claim.operator) == operator,
                                col(Claim.status).in_(["queued", "pending", "failed"]))
    if after_id:
        query = query.where(col(Claim.id) > after_id)
    return list(session.exec(query.order_by(col(Claim.id)).limit(limit)).all())


def pending_cancellations(session: UnitOfWork, operator: str, limit: int) -> list[Claim]:
    return list(session.exec(
        select(Claim).where(col(Claim.operator) == operator, col(Claim.status) == "accepted",
                            col(Claim.cancellation_pending).is_(True))
        .order_by(col(Claim.updated_at)).limit(limit)
    ).all())


def lease_expired(session: UnitOfWork, operator: str, now: datetime,
                  limit: int) -> list[Claim]:
    """This operator's pending claims whose lease has run out (their sender is gone),
    locked (PostgreSQL) so two sweeping instances never take the same one."""
    query = select(Claim).where(
        col(Claim.operator) == operator, col(Claim.status) == "pending",
        col(Claim.lease_until) < now,
    ).order_by(col(Claim.lease_until)).limit(limit).with_for_update(skip_locked=True)
    return list(session.exec(query).all())


def held_by(session: UnitOfWork, owner: str) -> list[Claim]:
    """The pending claims this process still holds, locked."""
    query = select(Claim).where(
        col(Claim.status) == "pending", col(Claim.lease_owner) == owner,
    ).with_for_update()
    return list(session.exec(query).all())
