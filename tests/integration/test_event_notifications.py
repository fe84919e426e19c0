"""PostgreSQL's notifications of new events: sent by the events table's trigger (migration
0020), no statement of the writer's own, once per pharmacy and transaction, only for
rows that are committed (not for a transaction or savepoint rolled back)."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import event

from gateway.claims import repository
from gateway.events.notifier import CHANNEL
from gateway.storage.db import Database
from gateway.storage.models import utcnow

FINESSES = ["330001231", "690000880", "130000599"]


def received(listener: psycopg.Connection) -> list[str]:
    return sorted(note.payload for note in listener.notifies(timeout=1.0, stop_after=10))


def test_the_events_trigger_notifies_every_pharmacy_of_a_transaction_once(database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("notifications are PostgreSQL's (SQLite instances share Redis)")
    db = Database(database_url)
    listener = psycopg.connect(db.engine.url.set(drivername="postgresql").render_as_string(
        hide_password=False), autocommit=True)
    listener.execute(f"LISTEN {CHANNEL}")
    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: sent.append(statement))

    def events_of(finesses: list[str]):
        def work(session):
            for finess in finesses:
                for _ in range(2):
                    repository.add_event(session, finess=finess, type_="claim.queued",
                                         claim_id=None, at=utcnow())
        return work

    try:
        db.write_now(events_of(FINESSES), deferred=True)
        assert not any("pg_notify" in statement for statement in sent)
        assert received(listener) == sorted(FINESSES)  # two events each, one notification

        def rolled_back(session):
            events_of(FINESSES[:1])(session)
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            db.write_now(rolled_back)
        assert received(listener) == []  # nothing committed, nobody woken

        def savepoint_rolled_back(session):
            with pytest.raises(RuntimeError), session.begin_nested():
                events_of(FINESSES[:1])(session)
                session.flush()
                raise RuntimeError("its savepoint rolled back")
            events_of(FINESSES[1:2])(session)

        db.write_now(savepoint_rolled_back)
        assert received(listener) == [FINESSES[1]]
    finally:
        listener.close()
        db.engine.dispose()
