"""Migration 0016: `exported` joins the statuses the queue counts keep (migration 0015's
triggers made again), on both databases; a downgrade puts exported claims back in the
queue with the counts still right."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Connection, create_engine, func, inspect, select
from test_queue_depth import CLAIMS, COUNTERS, add_claim, set_claim

from gateway.storage.db import sync_url
from gateway.storage.migrate import alembic_config


def counts(connection: Connection) -> dict[tuple[str, str], int]:
    """(operator, status) -> count, as the triggers keep it (zero counts left out)."""
    rows = connection.execute(select(COUNTERS.c.operator, COUNTERS.c.status,
                                     func.sum(COUNTERS.c.claims))
                              .group_by(COUNTERS.c.operator, COUNTERS.c.status))
    return {(operator, status): int(total) for operator, status, total in rows if total}


def truth(connection: Connection) -> dict[tuple[str, str], int]:
    rows = connection.execute(select(CLAIMS.c.operator, CLAIMS.c.status, func.count())
                              .where(CLAIMS.c.status.in_(["queued", "pending", "failed",
                                                          "exported"]))
                              .group_by(CLAIMS.c.operator, CLAIMS.c.status))
    return {(operator, status): int(total) for operator, status, total in rows}


def test_exported_claims_are_counted_and_a_downgrade_requeues_them(
        empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "0015")
    engine = create_engine(sync_url(empty_database))
    with engine.begin() as connection:
        for n in range(3):
            add_claim(connection, n, "queued")
    command.upgrade(config, "0016")
    with engine.begin() as connection:
        assert {"handover_batches", "handover_claims"} <= set(
            inspect(connection).get_table_names())
        set_claim(connection, "clm_0000", status="exported")
        set_claim(connection, "clm_0001", status="exported")
        assert counts(connection) == truth(connection) == {
            ("opera", "queued"): 1, ("opera", "exported"): 2}
        set_claim(connection, "clm_0001", status="accepted")  # settled by an acknowledgement
        add_claim(connection, 9, "exported")  # inserted so, as any code could
        assert counts(connection) == truth(connection) == {
            ("opera", "queued"): 1, ("opera", "exported"): 2}
    command.downgrade(config, "0015")
    with engine.begin() as connection:
        assert "handover_batches" not in inspect(connection).get_table_names()
        assert counts(connection) == truth(connection) == {("opera", "queued"): 3}
        set_claim(connection, "clm_0000", status="pending")  # 0015's triggers again
        assert counts(connection) == {("opera", "queued"): 2, ("opera", "pending"): 1}
    engine.dispose()
