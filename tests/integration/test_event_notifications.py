"""PostgreSQL's notifications of new events: one statement per transaction, whatever the
number of pharmacies it wrote events for, sent only when it commits."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import event

from gateway.claims import repository
from gateway.events.notifier import CHANNEL
from gateway.storage.db import Database
from gateway.storage.models import utcnow

FINESSES = ["330001231", "690000880", "130000599"]


def received(listener: psycopg.Connection) -> set[str]:
    return {note.payload for note in listener.notifies(timeout=1.0, stop_after=10)}


def test_one_statement_notifies_every_pharmacy_of_a_transaction(database_url):
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
        assert sum("pg_notify" in statement for statement in sent) == 1
        assert received(listener) == set(FINESSES)

        def rolled_back(session):
            events_of(FINESSES[:1])(session)
            raise RuntimeError("rolled back")

        with pytest.raises(RuntimeError):
            db.write_now(rolled_back)
        assert received(listener) == set()  # nothing committed, nobody woken
    finally:
        listener.close()
        db.engine.dispose()
