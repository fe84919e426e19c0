"""Questions asked on every drain step or queued claim read an index of what they ask,
on every backend, never every claim accepted since the gateway started (weeks of
history made them cost 70-200 ms each on SQLite):
- the drain asks, at every step and every half second while idle, for the claims whose
  cancellation is still to be sent: a partial index of those few claims (migration 0017);
- the receipt policy by cached rights reads a beneficiary's recent accepted claims at
  one pharmacy and insurer: an index of the three (migration 0018);
- the pharmacist's console, every 5 s, lists the pharmacy's queued, failed and recent
  claims: an index of the pharmacy's claims by status (migration 0019);
- a pharmacy's software lists its claims since an instant: a range of its claim ids."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from test_queue_depth import NOW, add_claim, set_claim
from ulid import ULID

from gateway.claims import repository as claims_repository
from gateway.console import repository as console_repository
from gateway.queue import repository
from gateway.receipts import repository as receipts_repository
from gateway.storage.db import sync_url
from gateway.storage.unit import UnitOfWork


def analyze(engine: Engine) -> None:
    """PostgreSQL's statistics, as autovacuum keeps them (SQLite's planner has none)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("ANALYZE claims"))


def planned(engine: Engine, question: Callable[[UnitOfWork], Any]) -> tuple[Any, str]:
    """What `question` answers, and the query plan of the last statement it sent (on
    PostgreSQL with sequential scans off: a table this small is read whole otherwise)."""
    sent: list[tuple[str, object]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        sent.append((statement, parameters))

    with UnitOfWork(engine) as session:
        answer = question(session)
        statement, parameters = sent[-1]
        connection = session.connection()
        if engine.dialect.name == "sqlite":
            cursor = connection.connection.driver_connection.cursor()
            plan = " ".join(str(row[-1]) for row in cursor.execute(
                f"EXPLAIN QUERY PLAN {statement}", parameters))
        else:
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            cursor = connection.connection.driver_connection.cursor()
            plan = " ".join(row[0] for row in cursor.execute(
                f"EXPLAIN {statement}", parameters).fetchall())
    event.remove(engine, "before_cursor_execute", record)
    return answer, plan


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
    found, plan = planned(engine, lambda session: repository.pending_cancellations(
        session, "opera", 10))
    engine.dispose()
    # accepted, this operator's, still to be sent, oldest first
    assert [claim.id for claim in found] == ["clm_0003", "clm_0007"]
    assert "ix_claims_cancellations" in plan, plan


def test_a_beneficiary_s_accepted_claims_come_from_their_own_index(database_url: str) -> None:
    engine = create_engine(sync_url(database_url))
    with engine.begin() as connection:
        for n in range(40):  # other beneficiaries' accepted claims (add_claim's "b" * 64)
            add_claim(connection, n, "accepted")
        for n, finess, insurer in ((50, "330001231", "80000001"), (51, "330001231", "80000001"),
                                   (52, "330001249", "80000001"), (53, "330001231", "80000002")):
            add_claim(connection, n, "accepted")
            set_claim(connection, f"clm_{n:04d}", beneficiary_hash="c" * 64, finess=finess,
                      insurer_number=insurer, updated_at=NOW + timedelta(minutes=n))
        add_claim(connection, 54, "queued")
        set_claim(connection, "clm_0054", beneficiary_hash="c" * 64)
        for n in range(100, 400):  # the pharmacy's other accepted claims of the period
            add_claim(connection, n, "accepted")
            set_claim(connection, f"clm_{n:04d}", beneficiary_hash=f"{n:064d}")
    analyze(engine)
    found, plan = planned(engine, lambda session: receipts_repository.accepted_claims_of(
        session, "330001231", "c" * 64, "80000001", NOW - timedelta(days=1)))
    engine.dispose()
    # this pharmacy's and insurer's, accepted, newest first
    assert [claim.id for claim in found] == ["clm_0051", "clm_0050"]
    assert "ix_claims_beneficiary_rights" in plan, plan


def test_the_console_s_lists_come_from_the_pharmacy_s_status_index(database_url: str) -> None:
    engine = create_engine(sync_url(database_url))
    with engine.begin() as connection:
        for n, status in enumerate(["accepted"] * 30 + ["rejected"] * 3 + ["cancelled"] * 2
                                   + ["queued"] * 4 + ["failed"] * 2):
            add_claim(connection, n, status)
            set_claim(connection, f"clm_{n:04d}", updated_at=NOW + timedelta(minutes=n % 7))
        add_claim(connection, 99, "accepted")  # another pharmacy's, the newest of all
        set_claim(connection, "clm_0099", finess="330001249",
                  updated_at=NOW + timedelta(hours=1))
        for n in range(100, 300):  # another pharmacy's queue, in an outage
            add_claim(connection, n, "queued")
            set_claim(connection, f"clm_{n:04d}", finess="330001249")
    analyze(engine)

    def recent(session: UnitOfWork) -> Any:
        return console_repository.claims_of_pharmacy(
            session, "330001231", console_repository.SETTLED, limit=5, oldest_first=False)

    newest, plan = planned(engine, recent)
    # every settled status, most recently changed first (ties by id), the limit held
    expected = sorted(((n % 7, f"clm_{n:04d}") for n in range(35)),
                      key=lambda pair: (-pair[0], pair[1]))[:5]
    assert [claim.id for claim in newest] == [claim_id for _, claim_id in expected]
    assert "ix_claims_pharmacy_status" in plan, plan
    failed, plan = planned(engine, lambda session: console_repository.claims_of_pharmacy(
        session, "330001231", ("failed",), limit=100, oldest_first=False))
    assert [claim.id for claim in failed] == ["clm_0040", "clm_0039"]
    assert "ix_claims_pharmacy_status" in plan, plan
    queued, plan = planned(engine, lambda session: console_repository.claims_of_pharmacy(
        session, "330001231", console_repository.QUEUED, limit=100, oldest_first=True))
    assert [claim.id for claim in queued] == ["clm_0035", "clm_0036", "clm_0037", "clm_0038"]
    assert "ix_claims_pharmacy_status" in plan, plan
    count, plan = planned(engine, lambda session: console_repository.count_of_pharmacy(
        session, "330001231", console_repository.QUEUED))
    engine.dispose()
    assert count == 4
    assert "ix_claims_pharmacy_status" in plan, plan


def test_a_pharmacy_s_claims_since_an_instant_are_read_from_that_instant_on(
        database_url: str) -> None:
    """`GET /v1/claims?since=`: claim ids are ULIDs, drawn as the claim is created, so the
    claims since an instant are a range of the pharmacy's ids, not a walk through all of
    them filtered by date. A claim whose id was drawn a moment before `since` and its
    `created_at` read at `since` is listed all the same."""
    engine = create_engine(sync_url(database_url))
    since = NOW - timedelta(hours=10)
    ids = {}
    with engine.begin() as connection:
        for n in range(40):  # one an hour, the newest an hour ago
            created = NOW - timedelta(hours=40 - n)
            ids[n] = f"clm_{ULID.from_datetime(created)}"
            set_claim(connection, add_claim(connection, n, "accepted"), id=ids[n],
                      created_at=created)
        add_claim(connection, 40, "accepted")  # drawn 1 ms before `since`, created at it
        ids[40] = f"clm_{ULID.from_datetime(since - timedelta(milliseconds=1))}"
        set_claim(connection, "clm_0040", id=ids[40], created_at=since)
        add_claim(connection, 41, "accepted")  # another pharmacy's
        set_claim(connection, "clm_0041", id=f"clm_{ULID.from_datetime(NOW)}",
                  finess="330001249", created_at=NOW)
    analyze(engine)
    found, plan = planned(engine, lambda session: claims_repository.list_own(
        session, finess="330001231", status=None, operator=None, since=since,
        before_id=None, limit=100))
    engine.dispose()
    assert [claim.id for claim in found] == [ids[n] for n in range(39, 29, -1)] + [ids[40]]
    # an index searched from the first id (SQLite: the pharmacy's; PostgreSQL, at this
    # size, the primary key's, every pharmacy's claims since then)
    assert re.search(r"USING INDEX ix_claims_finess_id \(finess=\? AND id>\?\)"
                     r"|Index Cond: .*\(id\)::text >= 'clm_", plan), plan


def test_a_pharmacy_s_claims_of_a_rare_status_come_from_the_status_index(
        database_url: str) -> None:
    """`GET /v1/claims?status=failed`: walking the pharmacy's ids newest first read its whole
    history before it found a page of a status few of its claims have (or none: a pharmacy
    that never cancels). Every status but accepted is read from an index by status, then
    sorted; accepted, most of the history, is still walked newest first: a page soonest."""
    engine = create_engine(sync_url(database_url))
    with engine.begin() as connection:
        for n in range(60):
            add_claim(connection, n, "failed" if n in (3, 17, 41) else "accepted")
        add_claim(connection, 60, "failed")
        set_claim(connection, "clm_0060", finess="330001249")  # another pharmacy's
    analyze(engine)

    def listed(status: str, before_id: str | None = None) -> Callable[[UnitOfWork], Any]:
        return lambda session: claims_repository.list_own(
            session, finess="330001231", status=status, operator=None, since=None,
            before_id=before_id, limit=2)

    failed, plan = planned(engine, listed("failed"))
    assert [claim.id for claim in failed] == ["clm_0041", "clm_0017"]
    # the pharmacy's failed claims, or (PostgreSQL, with statistics) every pharmacy's: few
    assert re.search(r"ix_claims_(pharmacy_)?status", plan), plan
    after, _ = planned(engine, listed("failed", before_id="clm_0017"))
    assert [claim.id for claim in after] == ["clm_0003"]
    none, plan = planned(engine, listed("cancelled"))  # this pharmacy never cancels
    assert none == []
    assert re.search(r"ix_claims_(pharmacy_)?status", plan), plan
    accepted, plan = planned(engine, listed("accepted"))
    engine.dispose()
    assert [claim.id for claim in accepted] == ["clm_0059", "clm_0058"]
    # walked newest first: the pharmacy's ids, or (PostgreSQL, at this size) all of them
    assert re.search(r"ix_claims_finess_id|Index Scan Backward using claims_pkey", plan), plan
