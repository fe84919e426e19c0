"""The queue counts the board and /metrics read are kept by the database (migration 0015):
every way a claim enters, moves between or leaves queued, pending and failed moves them,
on every backend; the migration counts the claims already there; the board and /metrics
read the counts, and show the same numbers as counting the claims themselves."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta

import pytest
from alembic import command
from simulator_control import set_fault
from sqlalchemy import Connection, create_engine, delete, func, inspect, select, text, update
from synthetic import claim_body
from test_drain import gateway, wait_until
from test_metrics import value

from adapters.base import ClaimOutcome
from gateway.claims import repository as claims_repository
from gateway.claims import transitions
from gateway.keys.admin import create_key
from gateway.queue import repository
from gateway.storage.db import Database, sync_url
from gateway.storage.migrate import alembic_config
from gateway.storage.models import Claim, QueueDepth, table_of, utcnow
from gateway.storage.unit import UnitOfWork

CLAIMS = table_of(Claim)
COUNTERS = table_of(QueueDepth)
NOW = utcnow()
Figures = dict[str, tuple[int, int, int, datetime | None]]  # queued, pending, failed, oldest


def add_claim(connection: Connection, n: int, status: str, operator: str = "opera",
              queued_at: datetime | None = None) -> str:
    claim_id = f"clm_{n:04d}"
    connection.execute(CLAIMS.insert(), {
        "id": claim_id, "finess": "330001231", "invoice_number": f"F-{n}",
        "request_hash": "r" * 64, "nir_hash": "n" * 64, "beneficiary_hash": "b" * 64,
        "operator": operator, "insurer_number": "80000001",
        "service_date": date(2026, 11, 2), "status": status, "attempts": 0,
        "maybe_sent": False, "cancellation_pending": False, "amc_requested_cents": 100,
        "payload_enc": b"\x01sealed", "coverage_decision": "not_needed",
        "created_at": NOW, "updated_at": NOW,
        "queued_at": queued_at or NOW + timedelta(seconds=n), "next_attempt_at": NOW})
    return claim_id


def kept(connection: Connection) -> Figures:
    """What the board and /metrics read (`repository.depth`), zero rows left out."""
    with UnitOfWork(bind=connection) as session:
        depth = repository.depth(session)
    return {operator: (d["queued"], d["pending"], d["failed"], d["oldest"])
            for operator, d in depth.items() if d["queued"] or d["pending"] or d["failed"]}


def counted(connection: Connection) -> Figures:
    """The same figures counted from the claims themselves (what depth() did before)."""
    figures: dict[str, list[object]] = {}
    for operator, status, count, oldest in connection.execute(
            select(CLAIMS.c.operator, CLAIMS.c.status, func.count(), func.min(CLAIMS.c.queued_at))
            .where(CLAIMS.c.status.in_(["queued", "pending", "failed"]))
            .group_by(CLAIMS.c.operator, CLAIMS.c.status)):
        entry = figures.setdefault(operator, [0, 0, 0, None])
        entry[("queued", "pending", "failed").index(status)] = count
        if status == "queued":
            entry[3] = oldest if oldest is None or oldest.tzinfo else oldest.replace(
                tzinfo=NOW.tzinfo)
    return {operator: tuple(entry) for operator, entry in figures.items()}  # type: ignore[misc]


def set_claim(connection: Connection, claim_id: str, **values: object) -> None:
    connection.execute(update(CLAIMS).where(CLAIMS.c.id == claim_id).values(**values))


def test_every_change_of_a_claim_moves_the_queue_depth(database_url: str) -> None:
    """Rows changed by hand, as any code (or an operator at a SQL prompt) may: inserts in
    every status, moves between every pair, changes that move nothing, a claim moved to
    another operator, statements over many claims, deletes."""
    engine = create_engine(sync_url(database_url))
    with engine.begin() as connection:
        ids = [add_claim(connection, n, status, operator) for n, (status, operator) in
               enumerate([("queued", "opera"), ("queued", "opera"), ("queued", "santex"),
                          ("pending", "opera"), ("failed", "opera"), ("new", "opera"),
                          ("accepted", "santex"), ("queued", "opera")])]
        assert kept(connection) == counted(connection)
        assert kept(connection)["opera"][:3] == (3, 1, 1)
        steps = [
            lambda: set_claim(connection, ids[0], status="pending"),     # leased
            lambda: set_claim(connection, ids[0], status="queued"),      # released
            lambda: set_claim(connection, ids[3], status="accepted"),    # settled
            lambda: set_claim(connection, ids[1], status="failed"),      # given up on
            lambda: set_claim(connection, ids[4], status="queued"),      # replayed
            lambda: set_claim(connection, ids[5], status="queued"),      # new -> queued
            lambda: set_claim(connection, ids[7], status="cancelled"),   # cancelled
            lambda: set_claim(connection, ids[6], status="queued"),      # accepted, requeued
            lambda: set_claim(connection, ids[2], status="queued"),      # the same status
            lambda: set_claim(connection, ids[2], updated_at=NOW),       # no status at all
            lambda: set_claim(connection, ids[2], operator="opera"),     # another operator
            lambda: set_claim(connection, ids[1], operator="santex", status="pending"),
            lambda: connection.execute(update(CLAIMS).where(       # one statement, many claims
                CLAIMS.c.status == "queued").values(status="pending")),
            lambda: connection.execute(update(CLAIMS).where(
                CLAIMS.c.id.in_(ids[:3])).values(status="queued")),
            lambda: connection.execute(delete(CLAIMS).where(CLAIMS.c.id == ids[0])),
            lambda: connection.execute(delete(CLAIMS).where(CLAIMS.c.id == ids[7])),
        ]
        for number, step in enumerate(steps):
            step()
            assert kept(connection) == counted(connection), f"after step {number}"
        assert kept(connection) == counted(connection) != {}
    engine.dispose()


def test_the_gateway_s_own_moves_keep_the_counts(database_url: str) -> None:
    """Through the code that moves claims: queued at intake or sent at once (pending),
    leased by the drain, given back, settled, retried, given up on (after too many
    attempts, or refused by the operator), replayed, cancelled."""
    database = Database(database_url)
    engine = create_engine(sync_url(database_url))
    with engine.begin() as connection:
        ids = [add_claim(connection, n, status) for n, status in
               enumerate(["queued"] * 6 + ["pending"] * 2)]

    def check(after: str) -> None:
        with engine.connect() as connection:
            assert kept(connection) == counted(connection), f"after {after}"

    def change(after: str, work):  # type: ignore[no-untyped-def]
        result = database.write_now(work)
        check(after)
        return result

    check("intake")
    leases = change("lease", lambda s: repository.lease_batch(
        s, operator="opera", owner="me", limit=4, now=utcnow() + timedelta(seconds=1),
        interval_s=0.0, send_timeout_s=30.0))
    leased = [lease.claim.id for lease in leases]
    assert len(leased) == 4
    change("release", lambda s: repository.release_unsent(s, leased[:1], "me"))

    def moved(claim_id: str, move) -> None:  # type: ignore[no-untyped-def]
        def work(session: UnitOfWork) -> None:
            move(session, claims_repository.load(session, claim_id))
        change(f"{move} of {claim_id}", work)

    moved(leased[1], lambda s, c: transitions.settle(s, c, ClaimOutcome(
        status="accepted", amc_cents=100, reference="R1")))
    moved(leased[2], lambda s, c: transitions.retry_later(
        s, c, "timeout", ambiguous=True, max_attempts=12, max_age=timedelta(days=1)))
    moved(leased[3], lambda s, c: transitions.retry_later(
        s, c, "timeout", ambiguous=False, max_attempts=1, max_age=timedelta(days=1)))
    moved(ids[6], lambda s, c: transitions.refuse(s, c, "HTTP 400"))
    moved(ids[7], lambda s, c: transitions.settle(s, c, ClaimOutcome(
        status="rejected", code="NO_RIGHTS")))
    moved(leased[3], lambda s, c: transitions.enqueue(s, c, "replayed"))
    moved(ids[5], lambda s, c: claims_repository.record(s, c, "cancelled", "cancelled"))
    change("expired leases", lambda s: [transitions.enqueue(s, c, "swept")
                                        for c in repository.lease_expired(
                                            s, "opera", utcnow() + timedelta(hours=1), 10)])
    with engine.connect() as connection:
        assert kept(connection)["opera"][:3] == (4, 0, 1)
    engine.dispose()
    database.engine.dispose()


def test_the_counts_stay_exact_with_concurrent_writers(database_url: str) -> None:
    """Several connections queue, lease and give back claims at once: on PostgreSQL each
    writes its own slot (the sum is what counts), on SQLite they take turns."""
    database = Database(database_url)
    writers, rounds = 4, 10
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            for round_ in range(rounds):
                def queue(session: UnitOfWork, n: int = number * 1000 + round_) -> None:
                    add_claim(session.connection(), n, "queued")
                database.write_now(queue)
                leases = database.write_now(lambda s: repository.lease_batch(
                    s, operator="opera", owner=f"w{number}", limit=3, now=utcnow() +
                    timedelta(seconds=60), interval_s=0.0, send_timeout_s=30.0))
                held = [lease.claim.id for lease in leases]
                database.write_now(lambda s, ids=held[1:]: repository.release_unsent(
                    s, ids, f"w{number}"))
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    with database.engine.connect() as connection:
        figures = kept(connection)
        assert figures == counted(connection)
        queued, pending, _, _ = figures["opera"]
        assert queued + pending == writers * rounds and pending > 0
    database.engine.dispose()


def test_the_migration_counts_the_claims_already_there(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "0014")
    engine = create_engine(sync_url(empty_database))
    with engine.begin() as connection:
        for n, (status, operator) in enumerate(
                [("queued", "opera"), ("queued", "opera"), ("pending", "opera"),
                 ("failed", "santex"), ("accepted", "opera"), ("queued", "santex")]):
            add_claim(connection, n, status, operator)
    command.upgrade(config, "0015")
    with engine.begin() as connection:
        assert kept(connection) == counted(connection)
        assert {op: figures[:3] for op, figures in kept(connection).items()} == {
            "opera": (2, 1, 0), "santex": (1, 0, 1)}
        set_claim(connection, "clm_0000", status="pending")  # the triggers run from now on
        assert kept(connection)["opera"][:3] == (1, 2, 0)

    command.downgrade(config, "0014")
    with engine.begin() as connection:
        assert "queue_depth" not in inspect(connection).get_table_names()
        set_claim(connection, "clm_0001", status="failed")  # no trigger left to fail on
    command.upgrade(config, "head")
    with engine.begin() as connection:
        assert kept(connection) == counted(connection)
        assert kept(connection)["opera"][:3] == (0, 2, 1)
    engine.dispose()


def test_the_board_reads_the_counts_it_does_not_count(database_url: str) -> None:
    """A count set by hand shows on the board as it is: proof that no call counts the
    claims (which, at 500,000 queued, took 330 to 500 ms)."""
    engine = create_engine(sync_url(database_url))
    with engine.begin() as connection:
        add_claim(connection, 1, "queued")
        connection.execute(update(COUNTERS).where(COUNTERS.c.status == "queued")
                           .values(claims=41))
        connection.execute(text(  # slot 64: the triggers write 0 to 63 only
            "INSERT INTO queue_depth (operator, status, slot, claims) "
            "VALUES ('opera', 'queued', 64, 1)"))
        assert kept(connection)["opera"][:3] == (42, 0, 0)
    engine.dispose()


@pytest.mark.anyio
async def test_the_board_and_metrics_show_the_counts(settings, simulators) -> None:
    """Through the API: claims queued in an outage, one cancelled, two given up on then
    replayed, all sent once the operator is back; at each step GET /v1/operators and
    /metrics show what counting the claims gives."""
    async def agree(expected: tuple[int, int, int]) -> None:
        with engine.connect() as connection:
            truth = counted(connection).get("opera", (0, 0, 0, None))
        board = {row["name"]: row for row in (await http.get(
            "/v1/operators", headers=staff)).json()}["opera"]
        metrics = (await http.get("/metrics")).text
        assert (board["queued"], board["pending"], board["failed"]) == truth[:3] == expected
        oldest = board["oldest_queued_at"]
        assert (datetime.fromisoformat(oldest.replace("Z", "+00:00")) if oldest else None) \
            == truth[3]
        for name, figure in zip(("gateway_queue_depth", "gateway_queue_pending",
                                 "gateway_queue_failed"), expected, strict=True):
            assert value(metrics, name, operator="opera") == figure, name
        assert (value(metrics, "gateway_queue_oldest_age_seconds", operator="opera") > 0) \
            == bool(truth[3])

    engine = create_engine(sync_url(settings.database_url))
    async with gateway(settings, simulators) as (app, http):
        _, secret = create_key(settings, role="operations")
        staff = {"Authorization": f"Bearer {secret}"}
        await agree((0, 0, 0))
        await set_fault(simulators["opera"], "down")
        ids = []
        for n in range(5):
            answer = await http.post("/v1/claims", json=claim_body(f"D{n}"))
            assert answer.status_code == 202
            ids.append(answer.json()["id"])
        paused = await http.post("/v1/operators/opera/pause", json={"reason": "counting"},
                                 headers=staff)
        assert paused.status_code == 200
        await agree((5, 0, 0))
        assert (await http.post(f"/v1/claims/{ids[0]}/cancel")).status_code == 200
        await agree((4, 0, 0))

        def give_up(session: UnitOfWork) -> None:
            for claim_id in ids[1:3]:
                claim = claims_repository.load(session, claim_id)
                transitions.retry_later(session, claim, "gave up", ambiguous=False,
                                        max_attempts=1, max_age=timedelta(days=1))

        app.state.context.db.write_now(give_up)
        await agree((2, 0, 2))
        replay = await http.post("/v1/operators/opera/replay", json={"status": "failed"},
                                 headers=staff)
        assert replay.status_code == 200 and replay.json()["count"] == 2
        await agree((4, 0, 0))
        await set_fault(simulators["opera"], "ok")
        assert (await http.post("/v1/operators/opera/resume", headers=staff)).status_code == 200
        assert await wait_until(lambda: _settled(http, ids[1:]), timeout=20)
        await agree((0, 0, 0))
    engine.dispose()


async def _settled(http, ids) -> bool:  # type: ignore[no-untyped-def]
    statuses = [(await http.get(f"/v1/claims/{i}")).json()["status"] for i in ids]
    return statuses == ["accepted"] * len(ids)
