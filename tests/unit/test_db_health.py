"""Which database failures are outages (503, one log line) and which stay bugs (500).

The errors are real ones: SQLite refusing a read-only file or a full one, PostgreSQL's
driver finding nobody at the port. A bad query or a broken constraint is not an outage.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from structlog.testing import capture_logs

from gateway.storage.db import Database
from gateway.storage.health import DatabaseHealth, DatabaseUnavailable, unavailable_reason


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sqlite_error(path: Path, statement: str, **connect: object) -> DBAPIError:
    engine = create_engine(f"sqlite:///{path}", connect_args=connect)
    try:
        with engine.begin() as connection:
            connection.execute(text(statement))
    except DBAPIError as error:
        return error
    finally:
        engine.dispose()
    raise AssertionError("the statement did not fail")


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "g.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
        connection.execute("INSERT INTO t VALUES (1)")
    return path


def test_a_read_only_sqlite_file_is_an_outage(database: Path) -> None:
    engine = create_engine(f"sqlite:///file:{database}?mode=ro&uri=true")
    with pytest.raises(DBAPIError) as caught, engine.begin() as connection:
        connection.execute(text("INSERT INTO t VALUES (2)"))
    engine.dispose()
    assert unavailable_reason(caught.value) == "sqlite_readonly"


def test_a_full_sqlite_file_is_an_outage(database: Path) -> None:
    engine = create_engine(f"sqlite:///{database}")
    with pytest.raises(DBAPIError) as caught, engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA max_page_count = 2")
        connection.exec_driver_sql("CREATE TABLE big (x TEXT)")
        connection.exec_driver_sql("INSERT INTO big VALUES (randomblob(100000))")
    engine.dispose()
    assert unavailable_reason(caught.value) == "sqlite_full"


def test_a_bad_query_or_a_constraint_stays_a_bug(database: Path) -> None:
    assert unavailable_reason(sqlite_error(database, "SELECT * FROM missing")) is None
    duplicate = sqlite_error(database, "INSERT INTO t VALUES (1)")
    assert isinstance(duplicate, IntegrityError)
    assert unavailable_reason(duplicate) is None
    assert unavailable_reason(ValueError("not a database error")) is None


def test_postgresql_nobody_listening_is_an_outage() -> None:
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/x",
                           connect_args={"connect_timeout": 2})
    with pytest.raises(DBAPIError) as caught:
        engine.connect()
    engine.dispose()
    assert unavailable_reason(caught.value) == "psycopg OperationalError"


def test_one_log_line_when_it_starts_and_one_when_a_write_works_again() -> None:
    health = DatabaseHealth()
    with capture_logs() as logs:
        health.wrote()  # healthy: nothing to say
        for _ in range(50):
            health.failed("sqlite_full")
        assert health.down
        health.wrote()
        health.wrote()
    assert [e["event"] for e in logs] == ["database.unavailable", "database.recovered"]
    assert logs[1]["failures"] == 50
    assert not health.down


@pytest.mark.anyio
async def test_the_database_answers_unavailable_and_remembers_the_outage(database: Path) -> None:
    db = Database(f"sqlite:///{database}")
    event.listen(db.engine, "connect",  # the file turned read-only under the process
                 lambda connection, _: connection.execute("PRAGMA query_only = 1"))
    with capture_logs() as logs, pytest.raises(DatabaseUnavailable) as caught:
        await db.write(lambda session: session.execute(text("INSERT INTO t VALUES (3)")))
    assert caught.value.status == 503 and caught.value.headers["Retry-After"]
    assert db.health.down
    assert [e["event"] for e in logs] == ["database.unavailable"]
    assert await db.read(lambda s: s.execute(text("SELECT count(*) FROM t")).scalar_one()) == 1
    assert db.health.down  # a read alone does not end it: this file still reads
    await db.dispose()


@pytest.mark.anyio
async def test_a_full_disk_mid_group_fails_the_works_before_it_too(database: Path) -> None:
    """SQLite answers a full disk by rolling the whole transaction back: a work grouped
    before the one that hit it must not be told it was stored."""
    db = Database(f"sqlite:///{database}")
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE blobs (x BLOB)")
        connection.execute("VACUUM")
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    event.listen(db.engine, "connect",  # the disk holds what there is, nothing more
                 lambda connection, _: connection.execute(f"PRAGMA max_page_count = {pages}"))

    def small(session):
        session.execute(text("INSERT INTO t VALUES (2)"))  # fits in a page already there

    def large(session):
        session.execute(text("INSERT INTO blobs VALUES (randomblob(200000))"))

    outcomes = await asyncio.gather(db.write(small), db.write(large), return_exceptions=True)
    assert [type(o) for o in outcomes] == [DatabaseUnavailable, DatabaseUnavailable]
    await db.dispose()
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM t").fetchone()[0] == 1
