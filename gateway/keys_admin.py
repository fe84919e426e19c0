"""Key administration for the CLI and the demo: one short transaction each."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlmodel import Session

from gateway.db import Database
from gateway.security import apikeys
from gateway.settings import Settings

T = TypeVar("T")


def _once(settings: Settings, work: Callable[[Session], T]) -> T:
    db = Database(settings.database_url)
    try:
        return db.write_now(work)
    finally:
        db.engine.dispose()


def create_key(
    settings: Settings, *, role: str, finess: str | None = None,
    operators: list[str] | None = None, label: str | None = None,
) -> tuple[str, str]:
    row, secret = apikeys.new_key(role=role, finess=finess, operators=operators, label=label)
    _once(settings, lambda session: session.add(row))
    return row.id, secret


def list_key_lines(settings: Settings) -> list[str]:
    rows = _once(settings, apikeys.list_keys)
    return [
        "\t".join([
            row.id, row.role, row.finess or row.operators or "-", row.label or "-",
            row.created_at.isoformat(timespec="seconds"),
            row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "-",
        ])
        for row in rows
    ]


def revoke_key(settings: Settings, key_id: str) -> bool:
    return _once(settings, lambda session: apikeys.revoke(session, key_id))
