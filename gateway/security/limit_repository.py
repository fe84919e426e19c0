"""Every query on the shared rate-limit counts and long-poll slots (no Redis: the database)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import delete, select

from gateway.storage.models import LongPollSlot, RateWindow, table_of
from gateway.storage.unit import UnitOfWork

_WINDOWS = table_of(RateWindow)
_SLOTS = table_of(LongPollSlot)
IN_CHUNK = 500  # buckets per `IN (...)`: far under every backend's parameter limit

Hit = tuple[str, int, int]  # bucket, slot start (epoch s), requests


def add_hits(session: UnitOfWork, hits: Sequence[Hit], buckets: Collection[str],
             since: int) -> dict[str, dict[int, int]]:
    """Add these requests to their slots; every instance's count per slot of these buckets
    from `since` on; slots (and long-poll slots) long gone are deleted on the way."""
    if hits:
        insert = session.insert(_WINDOWS)
        session.execute(insert.on_conflict_do_update(
            index_elements=["bucket", "window_start"],
            set_={"hits": _WINDOWS.c.hits + insert.excluded.hits},
        ), [{"bucket": b, "window_start": s, "hits": n} for b, s, n in hits])
    session.execute(delete(_WINDOWS).where(_WINDOWS.c.window_start < since - 60))
    session.execute(delete(_SLOTS).where(_SLOTS.c.expires_at < since - 60))
    totals: dict[str, dict[int, int]] = {}
    names = list(buckets)
    for start in range(0, len(names), IN_CHUNK):
        rows = session.execute(select(_WINDOWS.c.bucket, _WINDOWS.c.window_start, _WINDOWS.c.hits)
                               .where(_WINDOWS.c.bucket.in_(names[start:start + IN_CHUNK]),
                                      _WINDOWS.c.window_start >= since))
        for bucket, slot, count in rows:
            totals.setdefault(bucket, {})[int(slot)] = int(count)
    return totals


def take_slot(session: UnitOfWork, bucket: str, *, limit: int, holder: str, now: float,
              expires_at: float) -> bool:
    """Take a free or expired slot among the bucket's `limit`; False when all are held.
    Each attempt is one atomic upsert, so concurrent instances never share a slot."""
    insert = session.insert(_SLOTS)
    for slot in range(limit):
        taken = session.execute(insert.values(
            bucket=bucket, slot=slot, holder=holder, expires_at=expires_at,
        ).on_conflict_do_update(
            index_elements=["bucket", "slot"],
            set_={"holder": holder, "expires_at": expires_at},
            where=_SLOTS.c.expires_at <= now,
        ).returning(_SLOTS.c.slot)).first()
        if taken is not None:
            return True
    return False


def give_slot(session: UnitOfWork, bucket: str, holder: str) -> None:
    session.execute(delete(_SLOTS).where(_SLOTS.c.bucket == bucket, _SLOTS.c.holder == holder))
