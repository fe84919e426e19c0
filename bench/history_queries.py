"""Queries asked on every drain step, queued claim or console refresh, on weeks of history.

A gateway in service holds every claim it ever settled. The queries below run on the
drain's step (twice a second even while idle), inside a queued claim's write (the receipt
policy by cached rights), at each refresh of the pharmacist's console (every 5 s), or
when a pharmacy's software lists its claims (`GET /v1/claims`, since an instant or by
status): none should cost more as that history grows. The hourly retention purge's
search does (no index leads to the claims to purge): it runs in a read, and the write
that holds up the claims' intake takes only what it found. Two SQLite files are built, migrated to
the newest schema and filled with plain SQL: --claims settled claims over 300 days
(50 pharmacies, 3 operators; 90 % accepted, 7 % rejected, 3 % cancelled; those older
than 90 days purged as retention leaves them) and a live queue of 225 (200 queued, 20
failed, 5 pending); the small one holds --small settled claims, the yardstick. Each
query is the gateway's own function, run --repeats times on each file (median, ms), with
SQLite's plan of its last SELECT, and the ratio large / small: near 1 when the query
reads what it asks for, near the sizes' ratio when it reads the history.
Run: .venv/bin/python bench/history_queries.py [--claims N] [--small N] [--repeats R]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import machine
from sqlalchemy import Engine, create_engine, event
from ulid import ULID

from gateway.claims import repository as claims_of
from gateway.console import repository as console
from gateway.queue import repository as queue
from gateway.receipts import repository as receipts
from gateway.storage import retention
from gateway.storage.migrate import upgrade
from gateway.storage.models import utcnow
from gateway.storage.unit import UnitOfWork

FINESS = "330000007"  # one of the 50 pharmacies
DAY_S = 86_400
RETENTION_DAYS = 90  # as the files are built: older claims purged, younger ones not
READ_APART = "retention: search (a read, hourly)"  # reads the history, holding up nothing
Question = Callable[[UnitOfWork], Any]


def at(seconds_ago: str) -> str:
    """SQL for an instant `seconds_ago` (an SQL expression) before now, as stored."""
    return (f"strftime('%Y-%m-%d %H:%M:%S', 'now', '-' || ({seconds_ago}) || ' seconds')"
            " || '.000000'")


def claim_id_at(created_at: str) -> str:
    """A claim id as the gateway draws it when it creates a claim at `created_at`."""
    return f"clm_{ULID.from_datetime(datetime.fromisoformat(created_at).replace(tzinfo=UTC))}"


def build(path: Path, claims: int) -> None:
    """A migrated file holding `claims` settled claims over 300 days and a live queue."""
    upgrade(f"sqlite:///{path}")
    purged = claims * 210 // 300  # the oldest 210 of 300 days
    age = f"({claims} - i) * {300 * DAY_S} / {claims}"
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA synchronous=OFF")
        connection.create_function("ulid_at", 1, claim_id_at)
        connection.execute(f"""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {claims})
            INSERT INTO claims (id, finess, invoice_number, request_hash, nir_hash,
              beneficiary_hash, operator, insurer_number, service_date, status,
              amc_requested_cents, amc_covered_cents, first_http_status, cancellation_pending,
              coverage_decision, attempts, payload_enc, created_at, updated_at, queued_at,
              maybe_sent, purged_at)
            SELECT ulid_at({at(f"{age} + 2")}), printf('33%07d', i % 50), 'INV' || i,
              CASE WHEN i <= {purged} THEN '' ELSE lower(hex(randomblob(32))) END,
              CASE WHEN i <= {purged} THEN '' ELSE lower(hex(randomblob(32))) END,
              CASE WHEN i <= {purged} THEN '' ELSE printf('%064d', i % 20000) END,
              CASE i % 3 WHEN 0 THEN 'alpha' WHEN 1 THEN 'beta' ELSE 'gamma' END, '12345678',
              date('now', '-' || ({age} / {DAY_S}) || ' days'),
              CASE WHEN i % 100 < 90 THEN 'accepted' WHEN i % 100 < 97 THEN 'rejected'
                   ELSE 'cancelled' END,
              1000, 1000, 201, 0, 'not_needed', 1,
              CASE WHEN i <= {purged} THEN x'' ELSE randomblob(600) END,
              {at(f"{age} + 2")}, {at(age)}, {at(f"{age} + 2")}, 0,
              CASE WHEN i <= {purged} THEN {at(f"{age} - {90 * DAY_S}")} END
            FROM n""")  # noqa: S608 - numbers of our own, no outside input
        connection.execute(f"""
            WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 225)
            INSERT INTO claims (id, finess, invoice_number, request_hash, nir_hash,
              beneficiary_hash, operator, insurer_number, service_date, status,
              amc_requested_cents, cancellation_pending, coverage_decision, attempts,
              payload_enc, created_at, updated_at, queued_at, next_attempt_at, lease_owner,
              lease_until, maybe_sent)
            SELECT ulid_at({at("3600 - i")}), printf('33%07d', i % 50), 'QINV' || i, 'h', 'n',
              'b', CASE WHEN i <= 220 THEN 'alpha' ELSE 'beta' END, '12345678', date('now'),
              CASE WHEN i <= 200 THEN 'queued' WHEN i <= 220 THEN 'failed' ELSE 'pending' END,
              1000, 0, 'not_needed', 0, randomblob(600), {at("3600 - i")}, {at("3600 - i")},
              {at("3600 - i")}, {at("3600 - i")}, CASE WHEN i > 220 THEN 'elsewhere' END,
              CASE WHEN i > 220 THEN strftime('%Y-%m-%d %H:%M:%S', 'now', '+1 hour')
                   || '.000000' END, 0
            FROM n""")  # noqa: S608


def questions(engine: Engine) -> dict[str, Question]:
    with engine.connect() as connection:  # a beneficiary of the pharmacy's, with claims
        beneficiary = connection.exec_driver_sql(
            "SELECT beneficiary_hash FROM claims WHERE finess = ? AND purged_at IS NULL "
            "AND status = 'accepted' ORDER BY id DESC LIMIT 1", (FINESS,)).scalar_one()
    since = utcnow() - timedelta(days=30)
    cutoff = utcnow() - timedelta(days=RETENTION_DAYS)
    with UnitOfWork(engine) as session:  # what the job's read finds, for its write
        candidates = retention.purge_candidates(session, cutoff=cutoff)
    return {
        "drain: cancellations to send": lambda s: queue.pending_cancellations(s, "alpha", 10),
        "drain: claims due (lease, rolled back)": lambda s: queue.lease_batch(
            s, operator="alpha", owner="bench", limit=50, now=utcnow(), interval_s=0.01,
            send_timeout_s=30),
        "queued claim: evidence of rights": lambda s: receipts.accepted_claims_of(
            s, FINESS, beneficiary, "12345678", since),
        "console: queued claims": lambda s: console.claims_of_pharmacy(
            s, FINESS, console.QUEUED, limit=100, oldest_first=True),
        "console: queued count": lambda s: console.count_of_pharmacy(s, FINESS, console.QUEUED),
        "console: failed claims": lambda s: console.claims_of_pharmacy(
            s, FINESS, ("failed",), limit=100, oldest_first=False),
        "console: recent claims": lambda s: console.claims_of_pharmacy(
            s, FINESS, console.SETTLED, limit=20, oldest_first=False),
        "api: claims since yesterday": lambda s: claims_of.list_own(
            s, finess=FINESS, status=None, operator=None, since=utcnow() - timedelta(days=1),
            before_id=None, limit=51),
        "api: failed claims": lambda s: claims_of.list_own(
            s, finess=FINESS, status="failed", operator=None, since=None, before_id=None,
            limit=51),
        "api: cancelled claims (it has none)": lambda s: claims_of.list_own(
            s, finess=FINESS, status="cancelled", operator=None, since=None, before_id=None,
            limit=51),
        READ_APART: lambda s: retention.purge_candidates(
            s, cutoff=cutoff),
        "retention: the purge's write (rolled back)": lambda s: retention.purge(
            s, now=utcnow(), retention_days=RETENTION_DAYS, rights_cache_days=30,
            candidates=candidates),
    }


def measure(engine: Engine, question: Question, repeats: int) -> tuple[float, str]:
    """Median ms of `question` (each in its own transaction, rolled back) and the plan of
    the last SELECT it sent."""
    sent: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    times = []
    try:
        for _ in range(repeats):
            with UnitOfWork(engine) as session:
                started = time.perf_counter()
                question(session)
                times.append((time.perf_counter() - started) * 1000)
                session.rollback()
        statement, parameters = [(statement, parameters) for statement, parameters in sent
                                 if statement.lstrip().upper().startswith("SELECT")][-1]
        with engine.connect() as connection:
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            plan = " | ".join(str(row[-1]) for row in cursor.execute(
                f"EXPLAIN QUERY PLAN {statement}", parameters))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return statistics.median(times), plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=300_000, help="settled claims, large file")
    parser.add_argument("--small", type=int, default=3_000, help="settled claims, small file")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="history-queries-"))
    engines = {}
    for label, claims in (("small", args.small), ("large", args.claims)):
        started = time.monotonic()
        build(tmp / f"{label}.db", claims)
        engines[label] = create_engine(f"sqlite:///{tmp / f'{label}.db'}")
        print(f"{label}: {claims:,} settled claims and a queue of 225, built in "
              f"{time.monotonic() - started:.1f} s", flush=True)
    print(machine())
    print(f"\n{'median ms of ' + str(args.repeats):<40}{'small':>9}{'large':>9}{'ratio':>8}"
          "  plan (large)")
    ratios = {}
    for name, question in questions(engines["large"]).items():
        small, _ = measure(engines["small"], questions(engines["small"])[name], args.repeats)
        large, plan = measure(engines["large"], question, args.repeats)
        ratios[name] = large / small
        print(f"{name:<40}{small:>9.2f}{large:>9.2f}{large / small:>8.1f}  {plan}")
    searched = ratios.pop(READ_APART)
    print(f"\nsizes' ratio x{args.claims / args.small:.0f}; the largest query ratio "
          f"x{max(ratios.values()):.1f} (near 1: no query reads the history); the retention "
          f"search, which does, in a read of its own: x{searched:.1f}")


if __name__ == "__main__":
    main()
