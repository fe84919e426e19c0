"""The writer thread keeps its connection from one write group to the next while they
follow each other closely, and gives it back after a pause, a failure or a disposed pool:
a database restarted meanwhile is never met by a write. Its transaction statements go
on the driver's connection, their errors still SQLAlchemy's."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, make_url, select, text
from sqlalchemy.exc import DBAPIError

from gateway.storage import db as storage_db
from gateway.storage.db import Database
from gateway.storage.deferred import driver_execute, driver_first, sqlite_first
from gateway.storage.health import DatabaseUnavailable
from gateway.storage.unit import UnitOfWork

pytestmark = pytest.mark.anyio


@pytest.fixture
def postgres_only(database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("a PostgreSQL server's connections")


def checkouts(database: Database) -> list[int]:
    """Every connection checked out of the pool from now on (its DBAPI connection's id)."""
    seen: list[int] = []

    def checked_out(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        seen.append(id(dbapi_connection))

    event.listen(database.engine, "checkout", checked_out)
    return seen


def connection_of(session: UnitOfWork) -> int:
    return id(session.connection().connection.dbapi_connection)


async def test_groups_that_follow_each_other_share_one_checkout(database, monkeypatch):
    monkeypatch.setattr(storage_db, "PING_AFTER_IDLE_S", 60)
    seen = checkouts(database)
    used = [await database.write(connection_of) for _ in range(5)]
    assert len(seen) == 1  # five groups, one trip to the pool
    assert set(used) == set(seen)


async def test_after_a_pause_the_next_group_checks_a_connection_out_again(database,
                                                                          monkeypatch):
    monkeypatch.setattr(storage_db, "PING_AFTER_IDLE_S", 0.05)
    seen = checkouts(database)
    await database.write(connection_of)
    await asyncio.sleep(0.1)
    await database.write(connection_of)
    assert len(seen) == 2  # given back after the pause: the pool may ping it first


async def test_a_failed_group_gives_its_connection_back(database, monkeypatch):
    monkeypatch.setattr(storage_db, "PING_AFTER_IDLE_S", 60)
    seen = checkouts(database)
    await database.write(connection_of)

    def ends_the_transaction(session: UnitOfWork) -> None:
        """As a full disk does on SQLite, or a broken connection: the transaction is gone
        under the group, which then fails whole."""
        session.connection().connection.dbapi_connection.rollback()
        raise RuntimeError("the transaction is gone")

    with pytest.raises(Exception):  # noqa: B017, PT011 - whichever the driver raises first
        await database.write(ends_the_transaction)
    await database.write(connection_of)
    assert len(seen) == 2  # the failed group's connection went back, a fresh one came


async def test_a_disposed_pool_is_not_bypassed(database, monkeypatch):
    monkeypatch.setattr(storage_db, "PING_AFTER_IDLE_S", 60)
    first = await database.write(connection_of)
    database.engine.dispose()
    assert await database.write(connection_of) != first


def backend_pid(session: UnitOfWork) -> int:
    return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(database: Database, pid: int) -> None:
    """What a database restart does to a connection."""
    with psycopg.connect(database.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


async def test_a_restart_during_a_pause_fails_no_write(database, postgres_only, monkeypatch):
    monkeypatch.setattr(storage_db, "PING_AFTER_IDLE_S", 0.05)
    first = await database.write(backend_pid)
    terminate(database, first)
    await asyncio.sleep(0.1)
    assert await database.write(backend_pid) != first  # pinged, found dead, replaced


async def test_a_restart_between_close_groups_fails_one_and_not_the_next(database,
                                                                          postgres_only,
                                                                          monkeypatch):
    monkeypatch.setattr(storage_db, "PING_AFTER_IDLE_S", 60)
    first = await database.write(backend_pid)
    terminate(database, first)
    with pytest.raises(DatabaseUnavailable):
        await database.write(backend_pid)
    assert await database.write(backend_pid) != first


def test_a_statement_sent_raw_fails_as_sqlalchemy_would_say(database):
    """BEGIN, SAVEPOINT, RELEASE and COMMIT go on the driver's connection; their errors
    still reach `unavailable_reason` and the callers as SQLAlchemy's, the statement named."""
    with database.engine.connect() as connection:
        with pytest.raises(DBAPIError) as failed:
            driver_execute(connection, "RELEASE SAVEPOINT nowhere")
    assert failed.value.statement == "RELEASE SAVEPOINT nowhere"
    assert isinstance(failed.value.orig, sqlite3.Error | psycopg.Error)


def test_a_row_read_raw_fails_as_sqlalchemy_would_say(database):
    """A one-row read on the driver's connection or cursor (the audit head, the intake's
    read on SQLite) fails with SQLAlchemy's error too, the statement named, its first
    row otherwise."""
    with database.engine.connect() as connection:
        assert driver_first(connection, "SELECT 1, 'one'") == (1, "one")
        with pytest.raises(DBAPIError) as failed:
            driver_first(connection, "SELECT * FROM nowhere")
        if database.url.startswith("sqlite"):
            with pytest.raises(DBAPIError) as compiled:
                sqlite_first(connection, select(text("1")).select_from(text("nowhere")), {})
            assert "FROM nowhere" in str(compiled.value.statement)
    assert failed.value.statement == "SELECT * FROM nowhere"
    assert isinstance(failed.value.orig, sqlite3.Error | psycopg.Error)


async def test_writes_still_begin_immediate_on_sqlite(database):
    """The writer's BEGIN, sent raw, still takes SQLite's write lock at once: before the
    work has written anything, another writer is already kept out."""
    if not database.url.startswith("sqlite"):
        pytest.skip("SQLite's BEGIN IMMEDIATE")

    def another_writer_is_kept_out(_session: UnitOfWork) -> bool:
        other = sqlite3.connect(make_url(database.url).database, timeout=0,
                                isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            return "locked" in str(exc)
        finally:
            other.close()
        return False

    assert await database.write(another_writer_is_kept_out) is True
