"""Every query on the audit chain and its signed heads.

The chain is only ever appended to (`trail.AuditLog.append`) and read in order to be
verified: whole, or after a checkpoint (`audit.watch`); its head is read on every
append, so that read is two columns.
"""

from __future__ import annotations

from sqlalchemy.dialects import postgresql
from sqlmodel import col, select

from gateway.storage.models import AuditEntry, AuditHead, table_of
from gateway.storage.unit import Ahead, UnitOfWork

_ENTRIES = table_of(AuditEntry)


# SQL text, not a statement: sent with the chain's lock in one round trip (no parameters)
_HEAD_SQL = str(select(_ENTRIES.c.id, _ENTRIES.c.entry_hash).order_by(_ENTRIES.c.id.desc())
                .limit(1).compile(dialect=postgresql.dialect(),  # type: ignore[no-untyped-call]
                                  compile_kwargs={"literal_binds": True}))


_HEAD_KEY = ("audit.head",)


def stored_head(session: UnitOfWork, lock: int) -> tuple[int, str] | None:
    """The last stored entry as (id, hash), read once the chain's `lock` is held (taken
    with it, in one round trip, if it was not). Remembered while the transaction's rows
    are staged (its appends then stage the next heads), so a write group may read it
    ahead (`head_ahead`)."""
    row = session.remember(_HEAD_KEY, lambda: session.lock_then_first(lock, _HEAD_SQL))
    return (int(row[0]), str(row[1])) if row else None


def head_ahead(lock: int) -> Ahead:
    """`stored_head`'s read, for a write group to send with its others (PostgreSQL)."""
    return Ahead(_HEAD_KEY, _HEAD_SQL, lock=lock)


def entries(session: UnitOfWork) -> list[AuditEntry]:
    """The whole chain, oldest first."""
    return list(session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all())


def entries_after(session: UnitOfWork, after_id: int,
                  limit: int | None = None) -> list[AuditEntry]:
    """The chain after entry `after_id`, oldest first: `limit` entries, or all."""
    query = select(AuditEntry).where(col(AuditEntry.id) > after_id).order_by(col(AuditEntry.id))
    return list(session.exec(query.limit(limit) if limit else query).all())


def hash_of(session: UnitOfWork, entry_id: int) -> str | None:
    """The stored hash of one entry; None when there is no such entry."""
    return session.exec(select(AuditEntry.entry_hash)
                        .where(col(AuditEntry.id) == entry_id)).first()


def hashes_of(session: UnitOfWork, entry_ids: set[int]) -> dict[int, str]:
    """entry id -> stored hash, for those of `entry_ids` that exist."""
    rows = session.exec(select(AuditEntry.id, AuditEntry.entry_hash)
                        .where(col(AuditEntry.id).in_(entry_ids))).all()
    return {int(entry_id or 0): entry_hash for entry_id, entry_hash in rows}


def heads(session: UnitOfWork) -> list[AuditHead]:
    """Every signed head, oldest first."""
    return list(session.exec(select(AuditHead).order_by(col(AuditHead.id))).all())


def heads_after(session: UnitOfWork, head_id: int) -> list[AuditHead]:
    """The heads signed after head `head_id`, oldest first."""
    return list(session.exec(select(AuditHead).where(col(AuditHead.id) > head_id)
                             .order_by(col(AuditHead.id))).all())


def latest_head(session: UnitOfWork) -> AuditHead | None:
    return session.exec(select(AuditHead).order_by(col(AuditHead.id).desc()).limit(1)).first()
