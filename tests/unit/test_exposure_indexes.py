"""The exposure sums run for every queued claim: they must read an index alone."""

from __future__ import annotations

from datetime import date

from sqlalchemy import create_engine, text
from sqlmodel import Session

from gateway.receipts import repository


def plans(sqlite_url: str) -> list[str]:
    engine = create_engine(sqlite_url)
    seen: list[str] = []
    with Session(engine) as session:
        real_exec = session.exec

        def explain(statement, params=None, **kwargs):  # type: ignore[no-untyped-def]
            compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
            rows = session.connection().execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
            seen.extend(str(row[-1]) for row in rows)
            return real_exec(statement, params=params, **kwargs)

        session.exec = explain  # type: ignore[method-assign]
        repository.exposure_of_beneficiary(session, "b" * 64, date(2026, 11, 29))
        repository.outstanding_of_pharmacy(session, "330001231")
    engine.dispose()
    return seen


def test_both_sums_read_a_covering_index(sqlite_template):
    seen = plans(f"sqlite:///{sqlite_template}")
    assert len(seen) == 2
    assert "COVERING INDEX ix_receipts_beneficiary_day" in seen[0]
    assert "COVERING INDEX ix_receipts_finess_status" in seen[1]
