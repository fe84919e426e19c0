"""SQLite's WAL checkpoints run in a thread of their own: what write groups commit
reaches the database file without any write group copying it there, and a failed
checkpoint is tried again at the next write, not raised."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.storage import checkpoints
from gateway.storage.checkpoints import BACKSTOP_PAGES
from gateway.storage.db import Database
from gateway.storage.models import Event, utcnow

pytestmark = pytest.mark.anyio
CONNECT = sqlite3.connect  # the test's own reads, whatever the checkpointer is given


@pytest.fixture
async def database(migrated_sqlite, tmp_path, anyio_backend):
    db = Database(migrated_sqlite(tmp_path / "gateway.db"))
    yield db
    await db.dispose()


def add_event(event_id: str):
    def work(session) -> None:
        session.add(Event(event_id=event_id, finess="330001231", type="claim.queued",
                          claim_id=None, at=utcnow()))
    return work


def in_the_file_alone(db_path: Path, copy: Path, event_id: str) -> bool:
    """Whether the database file, read without its WAL, holds the event: only a
    checkpoint puts it there."""
    shutil.copy(db_path, copy)
    connection = CONNECT(copy)
    try:
        return connection.execute("SELECT count(*) FROM events WHERE event_id = ?",
                                  (event_id,)).fetchone()[0] == 1
    finally:
        connection.close()


async def wait_for_the_file(db_path: Path, copy: Path, event_id: str) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if await asyncio.to_thread(in_the_file_alone, db_path, copy, event_id):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_writes_reach_the_database_file_without_a_write_group_copying_them(
        database, tmp_path):
    await database.write(add_event("evt_checkpointed"), deferred=True)

    assert await wait_for_the_file(tmp_path / "gateway.db", tmp_path / "copy.db",
                                   "evt_checkpointed")


async def test_the_writers_own_checkpoints_are_only_a_backstop(database):
    pages = await database.read(lambda session: session.connection().exec_driver_sql(
        "PRAGMA wal_autocheckpoint").scalar())

    assert pages == BACKSTOP_PAGES  # not SQLite's 1,000: the writers leave it to the thread


async def test_a_failed_checkpoint_is_logged_and_tried_again_at_the_next_write(
        database, tmp_path, monkeypatch):
    failures = [sqlite3.OperationalError("disk I/O error")]
    tried = threading.Event()

    class FailingOnce:
        def __init__(self, connection: sqlite3.Connection) -> None:
            self._connection = connection

        def execute(self, sql: str):
            if failures and "wal_checkpoint" in sql:
                tried.set()
                raise failures.pop()
            return self._connection.execute(sql)

        def close(self) -> None:
            self._connection.close()

    monkeypatch.setattr(checkpoints.sqlite3, "connect",
                        lambda *args, **kwargs: FailingOnce(CONNECT(*args, **kwargs)))
    with capture_logs() as logs:
        await database.write(add_event("evt_first"), deferred=True)
        assert await asyncio.to_thread(tried.wait, 5)  # the first checkpoint failed
        await database.write(add_event("evt_second"), deferred=True)

        assert await wait_for_the_file(tmp_path / "gateway.db", tmp_path / "copy.db",
                                       "evt_second")
    failed = [entry for entry in logs if entry["event"] == "storage.checkpoint_failed"]
    assert failed == [{"event": "storage.checkpoint_failed", "error": "OperationalError",
                       "log_level": "warning"}]


def test_a_stop_that_comes_as_the_thread_wakes_for_a_write_ends_it(tmp_path, migrated_sqlite):
    """`stop` sets `stopping` and then `wrote`; the thread, woken by an earlier write,
    clears `wrote` just after. It must still end: it used to wait for another write,
    forever, and the process that stopped it with it (seen as a lifespan that never
    stopped)."""
    path = Path(migrated_sqlite(tmp_path / "gateway.db").removeprefix("sqlite:///"))
    clearing, stop_signalled = threading.Event(), threading.Event()

    class ClearedLate(threading.Event):
        def set(self) -> None:
            super().set()
            if checkpointer._stopping.is_set():
                stop_signalled.set()

        def clear(self) -> None:  # the thread's clear, held until `stop` has signalled
            clearing.set()
            assert stop_signalled.wait(5)
            super().clear()

    checkpointer = checkpoints.WalCheckpointer(str(path))
    checkpointer._wrote = ClearedLate()
    checkpointer.wrote()
    assert clearing.wait(5)  # the thread woke for the write, and clears it
    stopping = threading.Thread(target=checkpointer.stop, daemon=True)
    stopping.start()
    stopping.join(5)

    assert not stopping.is_alive()
