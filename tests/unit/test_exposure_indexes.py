"""The exposure sums run for every queued claim: they must read an index alone, never
the receipts themselves (an outage of days leaves thousands of them open)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import create_engine, event

from gateway.claims import repository as claims_repository
from gateway.receipts import repository
from gateway.storage.deferred import DeferredRows
from gateway.storage.unit import UnitOfWork


def plans(sqlite_url: str) -> list[str]:
    """The query plan of every statement the two sums send, however they send it."""
    engine = create_engine(sqlite_url)
    sent: list[tuple[str, object]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        sent.append((statement, parameters))

    with UnitOfWork(engine) as session:
        repository.exposure_of_claim(session, "b" * 64, date(2026, 11, 29), "330001231")
        cursor = session.connection().connection.driver_connection.cursor()
        seen = [str(row[-1]) for statement, parameters in list(sent)
                for row in cursor.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
    engine.dispose()
    return seen


def test_both_sums_read_an_index_alone(sqlite_template):
    seen = plans(f"sqlite:///{sqlite_template}")
    assert any("COVERING INDEX ix_receipts_beneficiary_day" in step for step in seen)
    # the pharmacy's running total, a row per operator (migration 0008)
    assert any("receipt_exposure USING INDEX sqlite_autoindex_receipt_exposure_1 (finess=?)"
               in step for step in seen)
    assert not any(step.startswith(("SCAN receipts", "SCAN receipt_exposure"))
                   for step in seen)  # neither table read row by row


def test_the_duplicate_check_reads_both_sums_in_its_own_statement(sqlite_template):
    """On SQLite a claim about to be queued asks once: duplicate, the beneficiary's day and
    the pharmacy's outstanding total (and the submitting key's row); the receipt policy's
    reads then send nothing."""
    engine = create_engine(f"sqlite:///{sqlite_template}")
    sent: list[str] = []  # as SQLite ran them, values in place: the read is the driver's

    day, beneficiary, finess = date(2026, 11, 29), "b" * 64, "330001231"
    with UnitOfWork(engine) as session:
        session.connection().connection.driver_connection.set_trace_callback(sent.append)
        session.staging = DeferredRows()
        session.staging.active = True  # as in the claim intake (a deferred work)
        assert claims_repository.read_for_intake(
            session, finess=finess, invoice_number="000123", idempotency_key=None,
            exposure_of=(beneficiary, day)).duplicates == []
        assert len(sent) == 1
        assert repository.exposure_of_claim(session, beneficiary, day, finess) == (0, 0)
        assert len(sent) == 1  # both answered from the duplicate check's statement
        sent.clear()
        read = claims_repository.read_for_intake(
            session, finess=finess, invoice_number="000124", idempotency_key=None,
            exposure_of=(beneficiary, day), key_id="key_0123456789abcdef")
        assert (read.duplicates, read.key_row) == ([], None)  # no such key, same statement
        assert len(sent) == 1
        cursor = session.connection().connection.driver_connection.cursor()
        plan = [str(row[-1]) for row in cursor.execute(f"EXPLAIN QUERY PLAN {sent[0]}")]
    engine.dispose()
    assert any("COVERING INDEX ix_receipts_beneficiary_day" in step for step in plan)
    assert any("receipt_exposure USING INDEX sqlite_autoindex_receipt_exposure_1 (finess=?)"
               in step for step in plan)
