"""The drain asks, at every step and every half second while idle, for the claims whose
cancellation is still to be sent: on every backend that question reads a partial index
of those few claims (migration 0017), never every claim the operator ever accepted."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import create_engine, event, text
from test_queue_depth import NOW, add_claim, set_claim

from gateway.queue import repository
from gateway.storage.db import sync_url
from gateway.storage.unit import UnitOfWork


def test_pending_cancellations_come_from_their_own_index(database_url: str) -> None:
    engine = create_engine(sync_url(database_url))
    with engine.begin() as connection:
        for n in range(40):
            add_claim(connection, n, "accepted")
        add_claim(connection, 40, "accepted", operator="other")
        for n, minutes in ((7, 3), (3, 2), (40, 1)):  # 40 is another operator's
            set_claim(connection, f"clm_{n:04d}", cancellation_pending=True,
                      updated_at=NOW + timedelta(minutes=minutes))
        set_claim(connection, "clm_0011", status="cancelled", cancellation_pending=True)
    sent: list[tuple[str, object]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        sent.append((statement, parameters))

    with UnitOfWork(engine) as session:
        found = repository.pending_cancellations(session, "opera", 10)
        statement, parameters = sent[-1]
        connection = session.connection()
        if engine.dialect.name == "sqlite":
            cursor = connection.connection.driver_connection.cursor()
            plan = " ".join(str(row[-1]) for row in cursor.execute(
                f"EXPLAIN QUERY PLAN {statement}", parameters))
        else:  # a table this small is read whole unless told otherwise
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            cursor = connection.connection.driver_connection.cursor()
            plan = " ".join(row[0] for row in cursor.execute(
                f"EXPLAIN {statement}", parameters).fetchall())
    engine.dispose()
    # accepted, this operator's, still to be sent, oldest first
    assert [claim.id for claim in found] == ["clm_0003", "clm_0007"]
    assert "ix_claims_cancellations" in plan, plan
