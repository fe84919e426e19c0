"""Every query on API keys. The one on every request reads a single row with Core,
no ORM session or identity map."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from gateway.storage.models import ApiKey, table_of
from gateway.storage.unit import UnitOfWork

_KEY_COLUMNS = table_of(ApiKey).c
# What authentication reads of a key; the claim intake reads them with its own statement.
KEY_ROW_COLUMNS = (_KEY_COLUMNS.id, _KEY_COLUMNS.secret_hash, _KEY_COLUMNS.role,
                   _KEY_COLUMNS.finess, _KEY_COLUMNS.operators, _KEY_COLUMNS.revoked_at,
                   _KEY_COLUMNS.expires_at, _KEY_COLUMNS.suspended_at,
                   _KEY_COLUMNS.suspension_reason, _KEY_COLUMNS.row_mac)
KEY_ID_MATCHES = _KEY_COLUMNS.id == bindparam("key_id")
KEY_NOT_READ = object()  # in place of a key row its reader did not ask for
_BY_ID = core_select(*KEY_ROW_COLUMNS).where(KEY_ID_MATCHES)


def key_row(connection: Connection | Session, key_id: str) -> Any:
    """The columns authentication reads (a Core row), or None."""
    return connection.execute(_BY_ID, {"key_id": key_id}).first()


def all_keys(session: UnitOfWork) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(col(ApiKey.created_at))).all())


def suspended_keys(session: UnitOfWork) -> list[ApiKey]:
    """Keys waiting for review (revoked ones need none), oldest suspension first."""
    return list(session.exec(select(ApiKey).where(
        col(ApiKey.suspended_at).is_not(None), col(ApiKey.revoked_at).is_(None),
    ).order_by(col(ApiKey.suspended_at))).all())
