"""PostgreSQL's fewer round trips keep their guarantees: a connection idle long enough is
still checked before use, and the audit chain's head read with its lock still sees
every entry the lock's last holder committed."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from gateway.audit.trail import AUDIT_LOCK, AuditLog, locked_head
from gateway.storage import db as storage_db
from gateway.storage.db import Database
from gateway.storage.health import DatabaseUnavailable

pytestmark = pytest.mark.usefixtures("postgres_only")


@pytest.fixture
def postgres_only(database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's connections and advisory locks")


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    yield database
    database.engine.dispose()


def backend_pid(db: Database) -> int:
    return int(db.read_connection_now(
        lambda connection: connection.execute(text("SELECT pg_backend_pid()")).scalar_one()))


def terminate(db: Database, pid: int) -> None:
    """What a database restart does to a pooled connection."""
    with psycopg.connect(db.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_a_connection_idle_past_the_ping_time_is_checked_and_replaced(db, monkeypatch):
    monkeypatch.setattr(storage_db, "PING_AFTER_IDLE_S", 0.05)
    first = backend_pid(db)
    terminate(db, first)
    time.sleep(0.1)
    assert backend_pid(db) != first  # pinged, found dead, replaced: the read did not fail


def test_a_connection_used_within_the_ping_time_is_not_pinged(db, monkeypatch):
    """The round trip saved: a busy connection goes out unchecked. Dropped under it, one
    statement fails, and the pool replaces its connections."""
    monkeypatch.setattr(storage_db, "PING_AFTER_IDLE_S", 60)
    first = backend_pid(db)
    terminate(db, first)
    with pytest.raises((DBAPIError, DatabaseUnavailable)):
        backend_pid(db)
    assert backend_pid(db) != first


def test_two_instances_appending_at_once_keep_one_unbroken_chain(db, database_url):
    """Each append reads the head in the same round trip as it takes the chain's lock:
    the read must still wait for the lock and see the last holder's entry (a stale head
    would fork the chain, or collide on the entry's id)."""
    other = Database(database_url)
    log = AuditLog(b"k" * 32)
    failures: list[BaseException] = []

    def append_many(database: Database, name: str) -> None:
        try:
            for i in range(15):
                database.write_now(lambda session, i=i: log.system(
                    session, "test.append", object_id=f"{name}-{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=append_many, args=(database, f"{n}-{t}"))
               for n, database in (("a", db), ("b", other)) for t in range(3)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert failures == []
        verification = db.read_now(log.verify_chain)
        assert verification.ok, verification
        assert verification.checked == 6 * 15
        head = db.write_now(locked_head)
        assert head is not None and head[0] == 6 * 15
    finally:
        other.engine.dispose()


def test_the_head_read_holds_the_chain_lock_until_the_transaction_ends(db):
    held = threading.Event()
    release = threading.Event()

    def hold(session) -> None:
        locked_head(session)
        held.set()
        release.wait(10)

    holder = threading.Thread(target=db.write_now, args=(hold,))
    holder.start()
    try:
        assert held.wait(10)
        taken = db.write_now(lambda session: session.try_lock(AUDIT_LOCK))
        assert taken is False
    finally:
        release.set()
        holder.join(10)
    assert db.write_now(lambda session: session.try_lock(AUDIT_LOCK)) is True
