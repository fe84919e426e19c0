"""Deferred works: staged rows land with their transaction, and only with it.

The works below share one transaction (group commit, on SQLite and PostgreSQL alike): a
failing work, a failing insert of staged rows and an ordinary work in between must each
touch exactly what they should.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from adapters.base import ClaimOutcome
from gateway.audit.trail import AuditLog
from gateway.claims import repository, transitions
from gateway.observability.metrics import REGISTRY
from gateway.storage.models import (
    ApiKey,
    AuditEntry,
    Claim,
    ClaimHistory,
    Event,
    OperatorControl,
    Receipt,
    utcnow,
)
from gateway.storage.unit import UnitOfWork

pytestmark = pytest.mark.anyio


def staging(event_id: str, *, fail: bool = False):
    def work(session: UnitOfWork) -> str:
        session.add(Event(event_id=event_id, finess="330001231", type="claim.queued",
                             claim_id=None, at=utcnow()))
        if fail:
            raise ValueError("this work changed its mind")
        return event_id

    return work


def event_ids(session: UnitOfWork) -> list[str]:
    return list(session.exec(select(Event.event_id).order_by(col(Event.id))).all())


async def test_staged_rows_are_committed_in_order(database):
    answers = await asyncio.gather(*(database.write(staging(f"evt_{i}"), deferred=True)
                                     for i in range(5)))
    assert answers == [f"evt_{i}" for i in range(5)]
    stored = await database.read(event_ids)
    assert stored == answers  # one transaction, in the order they were asked


def writer_samples() -> dict[str, float]:
    names = ("gateway_write_group_seconds_count", "gateway_write_group_seconds_sum",
             "gateway_write_group_works_sum")
    samples = {name: REGISTRY.get_sample_value(name) or 0.0 for name in names}
    for le in ("4.0", "8.0"):
        samples[f"works<={le}"] = REGISTRY.get_sample_value(
            "gateway_write_group_works_bucket", {"le": le}) or 0.0
    return samples


async def test_each_write_group_reports_its_time_and_its_works(database):
    """/metrics tells how busy the writer is and how many works share a commit."""
    before = writer_samples()
    await asyncio.gather(*(database.write(staging(f"evt_m{i}"), deferred=True)
                           for i in range(5)))
    after = writer_samples()
    assert after["gateway_write_group_seconds_count"] - before[
        "gateway_write_group_seconds_count"] == 1  # the five shared one group
    assert after["gateway_write_group_works_sum"] - before["gateway_write_group_works_sum"] == 5
    assert after["works<=4.0"] == before["works<=4.0"]
    assert after["works<=8.0"] - before["works<=8.0"] == 1
    assert after["gateway_write_group_seconds_sum"] > before["gateway_write_group_seconds_sum"]


async def test_a_failing_deferred_work_leaves_nothing_and_spares_the_others(database):
    answers = await asyncio.gather(
        database.write(staging("evt_a"), deferred=True),
        database.write(staging("evt_b", fail=True), deferred=True),
        database.write(staging("evt_c"), deferred=True),
        return_exceptions=True,
    )
    assert answers[0] == "evt_a" and answers[2] == "evt_c"
    assert isinstance(answers[1], ValueError)
    assert sorted(await database.read(event_ids)) == ["evt_a", "evt_c"]


async def test_an_ordinary_work_sees_rows_staged_before_it(database):
    def count(session: UnitOfWork) -> int:
        return int(session.exec(select(func.count()).select_from(Event)).one())

    answers = await asyncio.gather(
        database.write(staging("evt_a"), deferred=True),
        database.write(staging("evt_b"), deferred=True),
        database.write(count),
    )
    assert answers[2] == 2


async def test_a_failed_insert_fails_the_works_it_held_and_no_other(database):
    def ordinary(session: UnitOfWork) -> str:
        session.add(Event(event_id="evt_ordinary", finess="330001231", type="claim.queued",
                          claim_id=None, at=utcnow()))
        return "ordinary"

    answers = await asyncio.gather(
        database.write(staging("evt_twin"), deferred=True),
        database.write(staging("evt_twin"), deferred=True),  # event_id is unique
        database.write(ordinary),
        return_exceptions=True,
    )
    assert answers[2] == "ordinary"
    failed = [a for a in answers[:2] if isinstance(a, IntegrityError)]
    assert len(failed) == 2  # one transaction: both twins fail together
    assert await database.read(event_ids) == ["evt_ordinary"]


async def test_the_sessions_own_changes_are_written_before_the_staged_rows(database):
    """The staged rows go in on the connection, past the session's autoflush: a change the
    work made to a row it loaded is still written first, as the session's `execute` did."""
    await database.write(staging("evt_loaded"), deferred=True)
    statements: list[str] = []

    def sent(statement: str) -> None:
        if written := re.match(r"\s*(UPDATE|INSERT INTO)\s+(\w+)", statement):
            statements.append(f"{written[1]} {written[2]}")

    def record(connection, *args) -> None:
        if args:  # before_cursor_execute: (cursor, statement, ...)
            sent(args[1])
        elif database.url.startswith("sqlite"):  # begin: SQLite's staged rows go in raw,
            connection.connection.dbapi_connection.set_trace_callback(sent)  # seen there

    def change_then_stage(session: UnitOfWork) -> None:
        loaded = session.exec(select(Event).where(col(Event.event_id) == "evt_loaded")).one()
        loaded.type = "claim.failed"  # the session's own change, not flushed yet
        session.add(Event(event_id="evt_staged", finess="330001231", type="claim.queued",
                          claim_id=None, at=utcnow()))

    watched = "begin" if database.url.startswith("sqlite") else "before_cursor_execute"
    event.listen(database.engine, watched, record)
    try:
        await database.write(change_then_stage, deferred=True)
    finally:
        event.remove(database.engine, watched, record)
    assert statements == ["UPDATE events", "INSERT INTO events"]
    types = await database.read(lambda session: dict(session.exec(
        select(Event.event_id, Event.type)).all()))
    assert types == {"evt_loaded": "claim.failed", "evt_staged": "claim.queued"}


async def test_the_audit_chain_stays_whole_across_deferred_and_ordinary_appends(database):
    log = AuditLog(b"k" * 32)

    def append(session: UnitOfWork) -> int:
        return log.system(session, "test.append").id or 0

    answers = await asyncio.gather(*(
        database.write(append, deferred=index % 3 != 0) for index in range(12)))
    assert sorted(answers) == list(range(1, 13))
    entries = await database.read(
        lambda session: session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all())
    assert [entry.id for entry in entries] == list(range(1, 13))
    assert log.verify_entries(entries).ok


def a_claim(invoice_number: str) -> Claim:
    now = utcnow()
    return Claim(id=f"clm_{invoice_number}", finess="330001231", invoice_number=invoice_number,
                 request_hash="r" * 64, nir_hash="n" * 64, beneficiary_hash="b" * 64,
                 operator="opera", insurer_number="801234567", service_date=now.date(),
                 status="queued", amc_requested_cents=280, payload_enc=b"sealed",
                 created_at=now, updated_at=now)


async def test_staged_rows_are_stored_in_the_form_the_orm_stores(database):
    """On SQLite the staged rows go in on the driver's cursor, each value through its
    column type's processor: every column must be stored as the ORM stores it (an instant
    as SQLAlchemy's text, a date, a boolean as an integer, bytes as a blob), or queries
    comparing them (a lease, the queue's order) would silently miss."""
    now = utcnow()

    def claim(invoice_number: str) -> Claim:
        row = a_claim(invoice_number)
        row.created_at = row.updated_at = row.queued_at = now
        row.lease_until, row.maybe_sent = now + timedelta(seconds=5), True
        return row

    await database.write(lambda session: session.add(claim("ORM")))  # the ORM's flush
    await database.write(lambda session: session.add(claim("STAGED")), deferred=True)
    stored = await stored_claims(database)
    assert stored[0] == stored[1]


@pytest.mark.parametrize("key_id", ["key_live", "key_suspended", "key_missing", None])
@pytest.mark.parametrize("sums", [False, True])
async def test_a_read_on_the_drivers_cursor_answers_what_sqlalchemy_answers(
        database, key_id, sums):
    """`UnitOfWork.first` (on SQLite, the driver's cursor with the types' processors)
    must give the intake read's row as SQLAlchemy gives it: the key row's instants
    timezone-aware and equal (its MAC covers them), the flag a boolean, the sums
    integers, the statement's own constants (LIMIT, 'void') bound."""
    now = utcnow()

    def seed(session: UnitOfWork) -> None:
        session.add(ApiKey(id="key_live", secret_hash="h" * 64, role="pharmacy",
                           finess="330001231", created_at=now,
                           expires_at=now + timedelta(days=30), row_mac="m" * 64))
        session.add(ApiKey(id="key_suspended", secret_hash="s" * 64, role="pharmacy",
                           finess="330001231", created_at=now, revoked_at=now,
                           expires_at=now + timedelta(days=1), suspended_at=now,
                           suspension_reason="rights budget", row_mac="n" * 64))
        session.add(OperatorControl(operator="opera", paused=True))
        session.add(a_claim("INV-1"))
        session.flush()
        for index, (status, cents) in enumerate([("provisional", 1200), ("void", 700)]):
            session.add(Receipt(
                id=f"rcp_{index}", claim_id="clm_INV-1" if index == 0 else "clm_INV-2",
                finess="330001231", operator="opera", insurer_number="801234567",
                invoice_number=f"INV-{index}", beneficiary_hash="n" * 64,
                service_date=now.date(), amc_cents=cents, patient_due_cents=0, basis="card",
                status=status, kid="k", token="t", issued_at=now, expires_at=now,
                updated_at=now))
            if index == 0:
                session.add(a_claim("INV-2"))
                session.flush()

    await database.write(seed)
    statement = repository._INTAKE_READS[key_id is not None, sums]  # noqa: SLF001
    params = {"finess": "330001231", "invoice_number": "INV-1", "idempotency_key": None,
              "key_id": key_id, "operator": "opera", "beneficiary_hash": "n" * 64,
              "service_date": now.date()}

    def both(session: UnitOfWork) -> tuple[Any, Any]:
        return (session.first(statement, params),
                session.connection().execute(statement, params).first())

    ours, sqlalchemys = await database.write(both)
    if key_id == "key_missing":
        assert ours is None and sqlalchemys is None
        return
    assert ours is not None and sqlalchemys is not None
    assert ours._asdict() == sqlalchemys._asdict()
    assert [type(value) for value in ours] == [type(value) for value in sqlalchemys]
    assert ours.duplicate == "clm_INV-1" and ours.paused is True
    if sums:
        assert (ours.exposure, ours.outstanding) == (1200, 1200)
    if key_id == "key_suspended":
        assert ours.suspended_at == now and ours.suspended_at.tzinfo is not None


async def test_a_guarded_update_on_the_drivers_cursor_stores_what_sqlalchemy_stores(database):
    """`UnitOfWork.changed_returning` (on SQLite, the driver's cursor): a sent claim's
    UPDATE guarded by its exact lease must match that lease as stored, and write every
    value in the form SQLAlchemy writes it; a second one, the lease gone, changes nothing."""
    now = utcnow()
    lease = now + timedelta(seconds=30)

    def seed(session: UnitOfWork) -> None:
        for invoice_number in ("RAW", "SQLALCHEMY"):
            row = a_claim(invoice_number)
            row.status, row.lease_owner, row.lease_until = "pending", "me", lease
            row.created_at = row.updated_at = now
            session.add(row)

    await database.write(seed)
    values = {"status": "accepted", "attempts": 1, "first_http_status": 201,
              "updated_at": now + timedelta(seconds=1), "lease_owner": None,
              "lease_until": None, "maybe_sent": False, "last_error": None,
              "amc_covered_cents": 280, "operator_reference": "OP-1", "rejection_code": None,
              "rejection_label": None}

    def update(session: UnitOfWork) -> tuple[bool, bool, Any]:
        ours = repository.update_leased(session, "clm_RAW", owner="me", lease_until=lease,
                                        values=values)
        again = repository.update_leased(session, "clm_RAW", owner="me", lease_until=lease,
                                         values=values)
        sqlalchemys = session.connection().execute(
            repository._UPDATE_LEASED,  # noqa: SLF001
            repository._leased_params("clm_SQLALCHEMY", "me", lease, values)).first()  # noqa: SLF001
        return ours, again, sqlalchemys

    assert await database.write(update) == (True, False, ("clm_SQLALCHEMY",))
    stored = await stored_claims(database)
    assert stored[0] == stored[1]


async def test_a_duplicate_of_a_staged_claim_is_found(database):
    def store(session: UnitOfWork) -> str:
        session.add(a_claim("D1"))
        return "stored"

    def look(session: UnitOfWork) -> list[str]:
        return [c.id for c in repository.read_for_intake(
            session, finess="330001231", invoice_number="D1", idempotency_key=None).duplicates]

    answers = await asyncio.gather(database.write(store, deferred=True),
                                   database.write(look, deferred=True))
    assert answers == ["stored", ["clm_D1"]]


async def test_a_work_whose_savepoint_fails_on_release_has_one_outcome(database):
    """An ordinary work that adds a row it cannot insert fails when its savepoint is
    released, after it returned: that failure is its only outcome, and the works
    grouped with it still get their own answers (the group once had more outcomes than
    works, and the flusher failed every caller)."""
    def clashing(session: UnitOfWork) -> str:
        session.add(Event(event_id="evt_same", finess="330001231", type="claim.queued",
                          claim_id=None, at=utcnow()))
        return "returned"

    await database.write(clashing)
    answers = await asyncio.gather(database.write(staging("evt_before"), deferred=True),
                                   database.write(clashing),
                                   database.write(staging("evt_after"), deferred=True),
                                   return_exceptions=True)
    assert answers[0] == "evt_before" and answers[2] == "evt_after"
    assert isinstance(answers[1], IntegrityError)
    assert sorted(await database.read(event_ids)) == ["evt_after", "evt_before", "evt_same"]


async def test_staged_rows_that_fail_after_a_direct_write_fail_the_whole_transaction(database):
    """A deferred work may also change rows at once (`UnitOfWork.changed`: the claim a
    sender settles). No savepoint can undo that alone, so if its staged rows then fail
    to go in, nothing of the group may be committed: neither that change without its
    history, nor the others' rows."""
    await database.write(staging("evt_base"))

    def retype_and_stage(session: UnitOfWork) -> str:
        assert session.changed(update(Event).where(col(Event.event_id) == "evt_base")
                               .values(type="claim.accepted")) == 1
        session.add(Event(event_id="evt_twin", finess="330001231", type="claim.queued",
                          claim_id=None, at=utcnow()))
        return "retyped"

    def ordinary(session: UnitOfWork) -> str:
        session.add(Event(event_id="evt_ordinary", finess="330001231", type="claim.queued",
                          claim_id=None, at=utcnow()))
        return "ordinary"

    answers = await asyncio.gather(
        database.write(retype_and_stage, deferred=True),
        database.write(staging("evt_twin"), deferred=True),  # event_id is unique
        database.write(ordinary),
        return_exceptions=True,
    )
    types = await database.read(lambda s: dict(s.exec(select(Event.event_id, Event.type)).all()))
    assert all(isinstance(a, IntegrityError) for a in answers)  # all of it or nothing
    assert types == {"evt_base": "claim.queued"}


async def test_a_sender_settles_its_own_lease_in_one_update_and_no_other(database):
    """The synchronous sender's fast path: the claim it stored pending under its lease is
    settled with its history step and event; one whose lease changed meanwhile (swept,
    leased again) is left alone for the general path."""
    now = utcnow()
    mine, moved = a_claim("S1"), a_claim("S2")
    for claim in (mine, moved):
        claim.status, claim.lease_owner = "pending", "me"
        claim.lease_until = now + timedelta(seconds=10)
    await database.write(lambda s: [s.add(mine), s.add(moved)])
    await database.write(lambda s: s.changed(update(Claim).where(col(Claim.id) == moved.id)
                                              .values(lease_until=now + timedelta(seconds=20))))
    accepted = ClaimOutcome(status="accepted", reference="OP-7", amc_cents=280)

    settled = await database.write(
        lambda s: transitions.settle_sent(s, transitions.sent_answer(mine, accepted, 201)),
        deferred=True)
    untouched = await database.write(
        lambda s: transitions.settle_sent(s, transitions.sent_answer(moved, accepted, 201)),
        deferred=True)

    assert untouched is None
    assert settled is not None and settled.status == "accepted" and settled.attempts == 1
    def stored(session: UnitOfWork) -> dict[str, tuple[str, int | None, str | None]]:
        rows = session.exec(select(Claim.id, Claim.status, Claim.first_http_status,
                                   Claim.operator_reference, Claim.lease_owner)).all()
        return {row[0]: tuple(row[1:]) for row in rows}

    assert await database.read(stored) == {
        "clm_S1": ("accepted", 201, "OP-7", None), "clm_S2": ("pending", None, None, "me")}
    steps = await database.read(lambda s: s.exec(select(ClaimHistory.claim_id,
                                                         ClaimHistory.status)).all())
    assert list(steps) == [("clm_S1", "accepted")]
    events = await database.read(lambda s: s.exec(select(Event.claim_id, Event.type)).all())
    assert list(events) == [("clm_S1", "claim.accepted")]


async def stored_claims(database: Any) -> list[tuple[Any, ...]]:
    """Every claim's columns but its id and invoice number, as stored: as text and, on
    SQLite, with their storage class, by invoice number."""
    columns = [column.name for column in Claim.__table__.columns  # type: ignore[attr-defined]
               if column.name not in ("id", "invoice_number")]
    typed = ", ".join(f"CAST({name} AS TEXT)" for name in columns)
    if database.url.startswith("sqlite"):
        typed += ", " + ", ".join(f"typeof({name})" for name in columns)
    return await database.read_connection(lambda connection: [
        tuple(row) for row in connection.exec_driver_sql(
            f"SELECT {typed} FROM claims ORDER BY invoice_number")])  # noqa: S608 - columns
