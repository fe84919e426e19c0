"""Key administration for the CLI and the demo: one short transaction each."""

from __future__ import annotations

from gateway.db import Database
from gateway.security import apikeys
from gateway.settings import Settings


async def create_key(
    settings: Settings, *, role: str, finess: str | None = None,
    operators: list[str] | None = None, label: str | None = None,
) -> tuple[str, str]:
    row, secret = apikeys.new_key(role=role, finess=finess, operators=operators, label=label)
    db = Database(settings.database_url)
    try:
        async with db.session() as session, session.begin():
            session.add(row)
    finally:
        await db.dispose()
    return row.id, secret


async def list_key_lines(settings: Settings) -> list[str]:
    db = Database(settings.database_url)
    try:
        async with db.reader() as session:
            rows = await apikeys.list_keys(session)
    finally:
        await db.dispose()
    return [
        "\t".join([
            row.id, row.role, row.finess or row.operators or "-", row.label or "-",
            row.created_at.isoformat(timespec="seconds"),
            row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "-",
        ])
        for row in rows
    ]


async def revoke_key(settings: Settings, key_id: str) -> bool:
    db = Database(settings.database_url)
    try:
        async with db.session() as session, session.begin():
            return await apikeys.revoke(session, key_id)
    finally:
        await db.dispose()
