"""Every query on the audit chain and its signed heads.

The chain is only ever appended to (`trail.AuditLog.append`) and read whole, in order,
to be verified; its head is read on every append, so that read is two columns.
"""

from __future__ import annotations

from sqlmodel import col, select

from gateway.storage.models import AuditEntry, AuditHead, table_of
from gateway.storage.unit import UnitOfWork

_ENTRIES = table_of(AuditEntry)
_HEAD = select(_ENTRIES.c.id, _ENTRIES.c.entry_hash).order_by(_ENTRIES.c.id.desc()).limit(1)


def stored_head(session: UnitOfWork) -> tuple[int, str] | None:
    """The last stored entry as (id, hash)."""
    row = session.connection().execute(_HEAD).first()
    return (int(row[0]), str(row[1])) if row else None


def entries(session: UnitOfWork) -> list[AuditEntry]:
    """The whole chain, oldest first."""
    return list(session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all())


def heads(session: UnitOfWork) -> list[AuditHead]:
    """Every signed head, oldest first."""
    return list(session.exec(select(AuditHead).order_by(col(AuditHead.id))).all())


def latest_head(session: UnitOfWork) -> AuditHead | None:
    return session.exec(select(AuditHead).order_by(col(AuditHead.id).desc()).limit(1)).first()
