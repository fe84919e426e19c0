"""PostgreSQL's fewer round trips keep their guarantees: a connection idle long enough is
still checked before use; the audit chain's head read with its lock still sees every
entry the lock's last holder committed; a pharmacy's receipt decision lock sent with the
sums it protects still reads them once granted (a read taken before would let two
instances both pass the outstanding cap), and a transaction already holding it reads
them with the intake's one statement. A write group reads its claims' intake and the
chain's head ahead, all in one round trip, with the locks they need, and reads again
what an insert of its own may have changed; it runs its senders' guarded UPDATEs ahead
too, each once, whatever flush follows, with their receipts' moves (only where the
claim's UPDATE wrote), and a work that fails after its UPDATE ran fails its whole group."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text, update
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from adapters.base import ClaimOutcome
from gateway.audit.trail import AUDIT_LOCK, HEAD_AHEAD, AuditLog, locked_head
from gateway.claims import transitions
from gateway.claims.repository import intake_ahead, read_for_intake
from gateway.receipts import repository
from gateway.storage import db as storage_db
from gateway.storage import unit as unit_module
from gateway.storage.db import Database
from gateway.storage.deferred import DeferredRows
from gateway.storage.health import DatabaseUnavailable
from gateway.storage.models import (
    Claim,
    ClaimHistory,
    Event,
    Receipt,
    ReceiptExposure,
    new_row,
    utcnow,
)
from gateway.storage.unit import UnitOfWork

pytestmark = pytest.mark.usefixtures("postgres_only")

FINESS = "330000018"
PERSON = "b" * 64  # a beneficiary's keyed hash
DAY = date(2026, 12, 6)


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


@contextmanager
def holding(db: Database, work: Callable[[UnitOfWork], object]) -> Iterator[None]:
    """Meanwhile another transaction has run `work` and holds what it took, uncommitted;
    it commits on leaving."""
    held, release = threading.Event(), threading.Event()

    def hold(session: UnitOfWork) -> None:
        work(session)
        held.set()
        release.wait(10)

    holder = threading.Thread(target=db.write_now, args=(hold,))
    holder.start()
    try:
        assert held.wait(10)
        yield
    finally:
        release.set()
        holder.join(10)


def test_the_head_read_holds_the_chain_lock_until_the_transaction_ends(db):
    with holding(db, locked_head):
        taken = db.write_now(lambda session: session.try_lock(AUDIT_LOCK))
        assert taken is False
    assert db.write_now(lambda session: session.try_lock(AUDIT_LOCK)) is True


def staging(session: UnitOfWork) -> None:
    """As the write group runs a deferred work: reads are remembered, rows staged."""
    session.staging = DeferredRows()
    session.staging.active = True


def not_again() -> int:
    raise AssertionError("read again: the sums were not handed over")


def holding_the_decision_lock(db: Database, claim_id: str):
    """Meanwhile another transaction holds the pharmacy's receipt decision lock, with a
    receipt of 500 cents for `claim_id` added and not committed; it commits on leaving."""
    def decide(session: UnitOfWork) -> None:
        repository.lock_decisions(session, FINESS, PERSON, DAY)
        session.add(receipt(claim_id, 500))
        session.flush()
    return holding(db, decide)


def receipt(claim_id: str, amc_cents: int) -> Receipt:
    now = utcnow()
    return new_row(Receipt, id=f"rcp_{claim_id}", claim_id=claim_id, finess=FINESS,
                   operator="opera", insurer_number="801234567", invoice_number=claim_id,
                   beneficiary_hash=PERSON, service_date=DAY, amc_cents=amc_cents,
                   patient_due_cents=0, basis="card", status=repository.OPEN, kid="k",
                   token="t", issued_at=now, expires_at=now, updated_at=now)


def test_the_sums_read_with_the_lock_see_what_its_last_holder_committed(db):
    """One transaction holds the pharmacy's lock and adds a receipt of 500 cents; another
    sends the lock and the sums in one round trip meanwhile. Its read must wait for the
    lock and count the 500 cents once the first commits."""
    db.write_now(lambda session: session.add(new_row(
        Claim, id="clm_1", finess=FINESS, invoice_number="I1", request_hash="h",
        nir_hash=PERSON, beneficiary_hash=PERSON, operator="opera",
        insurer_number="801234567", service_date=DAY, status="queued",
        amc_requested_cents=500, payload_enc=b"x", created_at=utcnow(), updated_at=utcnow())))
    seen: list[tuple[int, int]] = []

    def decide(session: UnitOfWork) -> None:
        staging(session)
        repository.lock_decisions(session, FINESS, PERSON, DAY)
        assert session.holds(repository.decision_lock(FINESS))
        seen.append((session.remember(("beneficiary", PERSON, DAY), not_again),
                     session.remember(("outstanding", FINESS), not_again)))

    with holding_the_decision_lock(db, "clm_1"):
        waiting = threading.Thread(target=db.write_now, args=(decide,))
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive()  # the lock is held: the second decision waits
    waiting.join(10)
    assert seen == [(500, 500)]


def test_a_transaction_holding_the_lock_reads_the_sums_with_the_intake(db):
    db.write_now(lambda session: session.add(new_row(
        ReceiptExposure, finess=FINESS, operator="opera", outstanding_cents=1200)))

    def intake(session: UnitOfWork) -> tuple[int, int]:
        staging(session)
        read_for_intake(session, finess=FINESS, invoice_number="I2", idempotency_key=None,
                        exposure_of=(PERSON, DAY))
        assert session.staging is not None
        assert ("outstanding", FINESS) not in session.staging._remembered  # no lock yet
        repository.lock_decisions(session, FINESS, "c" * 64, DAY)  # another person's claim
        session.staging._remembered.clear()
        read_for_intake(session, finess=FINESS, invoice_number="I3", idempotency_key=None,
                        exposure_of=(PERSON, DAY))
        return (session.remember(("beneficiary", PERSON, DAY), not_again),
                session.remember(("outstanding", FINESS), not_again))

    assert db.write_now(intake) == (0, 1200)


def intake_of(invoice_number: str, **exposure):
    """A deferred work reading what a claim's intake reads, with what it reads ahead."""
    lookup = {"finess": FINESS, "invoice_number": invoice_number, "idempotency_key": None,
              "operator": "opera", **exposure}

    def work(session: UnitOfWork):
        read = read_for_intake(session, **lookup)
        sums = None
        if "exposure_of" in exposure:
            sums = (session.remember(("beneficiary", PERSON, DAY), not_again),
                    session.remember(("outstanding", FINESS), not_again))
        return [claim.id for claim in read.duplicates], sums

    return work, lambda: (intake_ahead(**lookup), HEAD_AHEAD)


def a_claim(invoice_number: str) -> Claim:
    return new_row(Claim, id=f"clm_{invoice_number}", finess=FINESS,
                   invoice_number=invoice_number, request_hash="h", nir_hash=PERSON,
                   beneficiary_hash=PERSON, operator="opera", insurer_number="801234567",
                   service_date=DAY, status="queued", amc_requested_cents=500,
                   payload_enc=b"x", created_at=utcnow(), updated_at=utcnow())


def statements(db: Database) -> list[str]:
    """What SQLAlchemy executes from now on (a pipeline's statements are not among them)."""
    sent: list[str] = []
    event.listen(db.engine, "before_cursor_execute",
                 lambda conn, cursor, statement, *args: sent.append(statement))
    return sent


@pytest.mark.anyio
async def test_a_write_group_reads_its_intakes_and_the_chain_head_ahead_in_one_round_trip(
        database_url):
    db = Database(database_url)
    try:
        await db.write(lambda session: session.add(a_claim("A2")))
        log = AuditLog(b"k" * 32)
        await db.write(lambda session: log.system(session, "test.append"))
        sent = statements(db)
        pipelines = []
        unit_pipeline = unit_module.pipeline

        def counted(connection, what):
            pipelines.append(what)
            return unit_pipeline(connection, what)

        unit_module.pipeline = counted
        try:
            answers = await asyncio.gather(*(
                db.write(lambda session, work=work: (work(session), log.system(
                    session, "test.intake").id)[0], deferred=True, ahead=ahead)
                for work, ahead in (intake_of(f"A{i}") for i in range(1, 5))))
        finally:
            unit_module.pipeline = unit_pipeline
        assert [duplicates for duplicates, _ in answers] == [[], ["clm_A2"], [], []]
        # neither an intake read nor the head read of its own (the duplicate itself is
        # loaded whole, and the staged rows inserted, as without reading ahead)
        assert [sql for sql in sent if "AS duplicate" in sql or "audit_log.id DESC" in sql] == []
        assert len(pipelines) == 1  # the group's lock, 4 intake reads, the head: one trip
        assert db.read_now(log.verify_chain).checked == 5
    finally:
        await db.dispose()


@pytest.mark.anyio
async def test_what_an_insert_of_the_group_changed_is_read_again(database_url):
    """A run of deferred works read ahead, then an ordinary work inserts the claim the
    next run asks about, then a work finds its own claim staged and has the rows inserted
    first (`require_flushed`): each answer read after those inserts, none stale."""
    db = Database(database_url)
    try:
        def store(invoice_number: str):
            def work(session: UnitOfWork) -> str:
                session.add(a_claim(invoice_number))
                return "stored"
            return work

        before, before_ahead = intake_of("R1")
        after, after_ahead = intake_of("R1")
        staged_then, staged_ahead = intake_of("R2")
        again, again_ahead = intake_of("R2")
        answers = await asyncio.gather(
            db.write(before, deferred=True, ahead=before_ahead),
            db.write(store("R1")),  # ordinary: the staged rows and it are inserted
            db.write(after, deferred=True, ahead=after_ahead),
            db.write(store("R2"), deferred=True),
            db.write(staged_then, deferred=True, ahead=staged_ahead),  # finds it staged
            db.write(again, deferred=True, ahead=again_ahead))
        assert answers == [([], None), "stored", (["clm_R1"], None), "stored",
                           (["clm_R2"], None), (["clm_R2"], None)]
    finally:
        await db.dispose()


@pytest.mark.anyio
async def test_an_intake_read_ahead_waits_for_the_pharmacys_decision_lock(database_url):
    """Read ahead, the exposure sums still follow the pharmacy's receipt decision lock:
    taken in the same round trip, before the read, so the read sees what the lock's last
    holder committed."""
    db = Database(database_url)
    db.write_now(lambda session: session.add(a_claim("L1")))
    with holding_the_decision_lock(db, "clm_L1"):
        work, ahead = intake_of("L2", exposure_of=(PERSON, DAY))
        answer = asyncio.ensure_future(db.write(work, deferred=True, ahead=ahead))
        await asyncio.sleep(0.3)
        assert not answer.done()  # the lock is held: the group waits for it
    try:
        assert await answer == ([], (500, 500))
    finally:
        await db.dispose()


def counting_pipelines() -> tuple[list[str], object]:
    pipelines: list[str] = []
    unit_pipeline = unit_module.pipeline

    def counted(connection, what):
        pipelines.append(what)
        return unit_pipeline(connection, what)

    return pipelines, counted


def pending_under_lease(invoice_number: str) -> Claim:
    claim = a_claim(invoice_number)
    claim.status, claim.lease_owner = "pending", "me"
    claim.lease_until = utcnow() + timedelta(seconds=30)
    return claim


ACCEPTED = ClaimOutcome(status="accepted", reference="OP-9", amc_cents=500)


def settling(answer: transitions.SentAnswer):
    """A sender's deferred work recording `answer`: the status it stored, None if the
    claim had moved."""
    def work(session: UnitOfWork) -> str | None:
        settled = transitions.settle_sent(session, answer)
        return None if settled is None else settled.status
    return work


@pytest.mark.anyio
async def test_a_write_group_runs_its_senders_guarded_updates_ahead_each_once(database_url):
    """Three senders' answers, grouped with a work that finds its claim staged and has
    the rows inserted first (a flush in the middle of the run): every UPDATE sent in the
    group's first round trip, none again after the flush (run twice, it would find its
    claim no longer pending and report it moved)."""
    db = Database(database_url)
    try:
        claims = [pending_under_lease(f"W{i}") for i in range(3)]
        await db.write(lambda session: session.add_all(claims))
        answers = [transitions.sent_answer(claim, ACCEPTED, 201) for claim in claims]
        sent = statements(db)
        pipelines, counted = counting_pipelines()

        def store(session: UnitOfWork) -> str:
            session.add(a_claim("W9"))
            return "stored"

        look, look_ahead = intake_of("W9")

        unit_pipeline, unit_module.pipeline = unit_module.pipeline, counted
        try:
            outcomes = await asyncio.gather(
                db.write(settling(answers[0]), deferred=True, ahead=answers[0].ahead),
                db.write(store, deferred=True),
                db.write(look, deferred=True, ahead=look_ahead),  # finds W9 staged
                *(db.write(settling(answer), deferred=True, ahead=answer.ahead)
                  for answer in answers[1:]))
        finally:
            unit_module.pipeline = unit_pipeline
        assert outcomes == ["accepted", "stored", (["clm_W9"], None), "accepted", "accepted"]
        assert [sql for sql in sent if sql.startswith("UPDATE claims")] == []
        # one round trip: after the flush, the run's rest had nothing left to send
        assert len(pipelines) == 1

        def stored(session: UnitOfWork):
            return sorted(session.exec(select(Claim.invoice_number, Claim.status,
                                              Claim.lease_owner)).all())

        assert await db.read(stored) == [("W0", "accepted", None), ("W1", "accepted", None),
                                          ("W2", "accepted", None), ("W9", "queued", None)]
        steps = await db.read(lambda session: session.exec(
            select(ClaimHistory.claim_id).where(ClaimHistory.status == "accepted")).all())
        assert sorted(steps) == ["clm_W0", "clm_W1", "clm_W2"]
    finally:
        await db.dispose()


@pytest.mark.anyio
async def test_an_update_ahead_that_finds_the_lease_moved_changes_nothing(database_url):
    db = Database(database_url)
    try:
        claim = pending_under_lease("M1")
        await db.write(lambda session: session.add(claim))
        answer = transitions.sent_answer(claim, ACCEPTED, 201)
        await db.write(lambda session: session.changed(  # swept and leased again meanwhile
            update(Claim).where(col(Claim.id) == claim.id).values(lease_owner="other")))
        settled = await db.write(lambda session: transitions.settle_sent(session, answer),
                                 deferred=True, ahead=answer.ahead)
        assert settled is None
        stored = await db.read(lambda session: session.get(Claim, claim.id))
        assert (stored.status, stored.lease_owner) == ("pending", "other")
    finally:
        await db.dispose()


@pytest.mark.anyio
async def test_a_work_that_fails_after_its_update_ran_ahead_fails_its_whole_group(database_url):
    """Its UPDATE ran in the group's first round trip, before the work: no savepoint can
    undo it alone, so the group fails whole and nothing it did is committed (else the
    claim would be stored answered while its sender heard the write failed)."""
    db = Database(database_url)
    try:
        claim = pending_under_lease("F1")
        await db.write(lambda session: session.add(claim))
        answer = transitions.sent_answer(claim, ACCEPTED, 201)

        def fails_before_writing(session: UnitOfWork):
            raise ValueError("the work failed before it reached its UPDATE")

        def store(session: UnitOfWork) -> str:
            session.add(a_claim("F9"))
            return "stored"

        outcomes = await asyncio.gather(
            db.write(store, deferred=True),
            db.write(fails_before_writing, deferred=True, ahead=answer.ahead),
            return_exceptions=True)
        assert [type(outcome) for outcome in outcomes] == [ValueError, ValueError]

        def stored(session: UnitOfWork):
            return sorted(session.exec(select(Claim.invoice_number, Claim.status,
                                              Claim.lease_owner)).all())

        assert await db.read(stored) == [("F1", "pending", "me")]
    finally:
        await db.dispose()


def with_receipt_under_lease(invoice_number: str) -> tuple[Claim, Receipt]:
    claim = pending_under_lease(invoice_number)
    claim.coverage_decision = "provisional"
    return claim, receipt(claim.id, 500)


@pytest.mark.anyio
async def test_a_senders_answer_moves_its_receipt_ahead_with_the_claim(database_url):
    """The receipt's move rides the group's first round trip too, right after its claim's
    guarded UPDATE: no statement of its own, and the receipt moves at the instant the
    claim was answered, followed by its step and event as before."""
    db = Database(database_url)
    try:
        pairs = [with_receipt_under_lease(f"R{i}") for i in range(2)]
        await db.write(lambda session: session.add_all([row for pair in pairs for row in pair]))
        answers = [transitions.sent_answer(claim, outcome, 201) for (claim, _), outcome in
                   zip(pairs, [ACCEPTED, ClaimOutcome(status="rejected", code="R1")],
                       strict=True)]
        sent = statements(db)
        pipelines, counted = counting_pipelines()

        unit_pipeline, unit_module.pipeline = unit_module.pipeline, counted
        try:
            outcomes = await asyncio.gather(*(
                db.write(settling(answer), deferred=True, ahead=answer.ahead)
                for answer in answers))
        finally:
            unit_module.pipeline = unit_pipeline
        assert outcomes == ["accepted", "rejected"]
        assert [sql for sql in sent if sql.startswith("UPDATE")] == []
        assert len(pipelines) == 1

        def stored(session: UnitOfWork):
            return sorted(session.exec(select(Receipt.id, Receipt.status, Receipt.updated_at,
                                              Claim.updated_at).join(
                Claim, col(Claim.id) == col(Receipt.claim_id))).all())

        rows = await db.read(stored)
        assert [(receipt_id, status) for receipt_id, status, _, _ in rows] == [
            ("rcp_clm_R0", "honored"), ("rcp_clm_R1", "contested")]
        assert all(moved_at == answered_at for _, _, moved_at, answered_at in rows)
        events = await db.read(lambda session: sorted(session.exec(
            select(Event.claim_id, Event.type).where(col(Event.type).like("receipt.%"))).all()))
        assert events == [("clm_R0", "receipt.honored"), ("clm_R1", "receipt.contested")]
    finally:
        await db.dispose()


@pytest.mark.anyio
async def test_a_receipt_move_ahead_waits_for_its_claims_update(database_url):
    """The claim's lease moved before the group ran (swept back to the queue): its guarded
    UPDATE writes nothing, and so its receipt, sent ahead with it, stays open for the
    general path to follow."""
    db = Database(database_url)
    try:
        claim, its_receipt = with_receipt_under_lease("L1")
        await db.write(lambda session: session.add_all([claim, its_receipt]))
        answer = transitions.sent_answer(claim, ACCEPTED, 201)
        await db.write(lambda session: session.changed(
            update(Claim).where(col(Claim.id) == claim.id).values(
                status="queued", lease_owner=None, lease_until=None)))
        settled = await db.write(lambda session: transitions.settle_sent(session, answer),
                                 deferred=True, ahead=answer.ahead)
        assert settled is None
        stored = await db.read(lambda session: session.get(Receipt, its_receipt.id))
        assert stored.status == repository.OPEN
    finally:
        await db.dispose()


def staged_event(event_id: str) -> Callable[[UnitOfWork], str]:
    def work(session: UnitOfWork) -> str:
        session.add(Event(event_id=event_id, finess=FINESS, type="claim.queued",
                          claim_id=None, at=utcnow()))
        return event_id

    return work


def stored_events(db: Database) -> list[str]:
    return sorted(db.read_now(lambda session: list(session.exec(select(Event.event_id)).all())))


@pytest.mark.anyio
async def test_a_groups_commit_rides_the_pipeline_of_its_staged_rows(database_url):
    """Two round trips for a group of staged rows: BEGIN with its lock, then the inserts
    and COMMIT together; the session's own commit finds nothing left to commit."""
    db = Database(database_url)
    left_to_commit: list[bool] = []
    commit = psycopg.Connection.commit

    def watched(connection: psycopg.Connection) -> None:
        left_to_commit.append(
            connection.info.transaction_status != psycopg.pq.TransactionStatus.IDLE)
        commit(connection)

    sent: list[str] = []  # at the driver: SQLAlchemy's statements and those sent raw
    execute = psycopg.Cursor.execute

    def watched_execute(cursor: psycopg.Cursor, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(str(query))
        return execute(cursor, query, *args, **kwargs)

    psycopg.Connection.commit = watched  # type: ignore[method-assign]
    psycopg.Cursor.execute = watched_execute  # type: ignore[method-assign]
    try:
        answers = await asyncio.gather(*(db.write(staged_event(f"evt_ride_{i}"), deferred=True)
                                         for i in range(3)))
    finally:
        psycopg.Connection.commit = commit  # type: ignore[method-assign]
        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
    try:
        assert answers == [f"evt_ride_{i}" for i in range(3)]
        assert left_to_commit == [False]  # one group, committed in its pipeline
        assert sent[-2:] == ["RELEASE SAVEPOINT staged_rows", "COMMIT"]
        assert stored_events(db) == answers  # another connection sees them: committed
    finally:
        await db.dispose()


@pytest.mark.anyio
async def test_a_commit_that_fails_in_the_pipeline_fails_the_whole_group(database_url):
    """A COMMIT refused (here by a deferred check on one row) has undone every work of
    the group: each is told so, nothing is stored, and the next group writes as before."""
    db = Database(database_url)
    with db.engine.begin() as connection:
        connection.execute(text(
            "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$"))
        connection.execute(text(
            "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON events "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
            "WHEN (NEW.event_id = 'evt_refused') EXECUTE FUNCTION refuse_at_commit()"))
    try:
        answers = await asyncio.gather(
            db.write(lambda session: session.add(a_claim("C1"))),  # an ordinary work first
            db.write(staged_event("evt_kept_before"), deferred=True),
            db.write(staged_event("evt_refused"), deferred=True),  # the last flush: COMMIT
            return_exceptions=True)
        assert all(isinstance(answer, DBAPIError) for answer in answers), answers
        assert "refused at commit" in str(answers[1])
        assert stored_events(db) == []
        assert db.read_now(lambda session: session.get(Claim, "clm_C1")) is None
        assert await db.write(staged_event("evt_after"), deferred=True) == "evt_after"
        assert stored_events(db) == ["evt_after"]
    finally:
        with db.engine.begin() as connection:
            connection.execute(text("DROP TRIGGER refuse_at_commit ON events"))
            connection.execute(text("DROP FUNCTION refuse_at_commit()"))
        await db.dispose()
