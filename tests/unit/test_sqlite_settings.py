"""Every SQLite connection the gateway opens is set up the same way: WAL with full
fsync (a 202 is a promise), foreign keys enforced, sub-journals kept in memory."""

from __future__ import annotations

from pathlib import Path

from gateway.storage.db import create_engine


def test_every_connection_is_durable_and_keeps_its_sub_journals_in_memory(
        tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    with engine.connect() as connection:
        cursor = connection.connection.driver_connection.cursor()
        settings = {name: cursor.execute(f"PRAGMA {name}").fetchone()[0]
                    for name in ("journal_mode", "synchronous", "foreign_keys", "temp_store")}
    engine.dispose()
    # synchronous 2 = FULL; temp_store 2 = MEMORY (no temporary file per savepoint)
    assert settings == {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1,
                        "temp_store": 2}
