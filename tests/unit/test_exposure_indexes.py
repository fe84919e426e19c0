"""The exposure sums run for every queued claim: they must read an index alone, never
the receipts themselves (an outage of days leaves thousands of them open)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import create_engine, event

from gateway.receipts import repository
from gateway.storage.unit import UnitOfWork


def plans(sqlite_url: str) -> list[str]:
    """The query plan of every statement the two sums send, however they send it."""
    engine = create_engine(sqlite_url)
    sent: list[tuple[str, object]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        sent.append((statement, parameters))

    with UnitOfWork(engine) as session:
        repository.exposure_of_beneficiary(session, "b" * 64, date(2026, 11, 29))
        repository.outstanding_of_pharmacy(session, "330001231")
        cursor = session.connection().connection.driver_connection.cursor()
        seen = [str(row[-1]) for statement, parameters in list(sent)
                for row in cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    engine.dispose()
    return seen


def test_both_sums_read_an_index_alone(sqlite_template):
    seen = plans(f"sqlite:///{sqlite_template}")
    assert len(seen) == 2
    assert "COVERING INDEX ix_receipts_beneficiary_day" in seen[0]
    # the pharmacy's running total, a row per operator (migration 0008)
    assert "receipt_exposure USING INDEX sqlite_autoindex_receipt_exposure_1 (finess=?)" in seen[1]
