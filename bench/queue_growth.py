"""Does queueing a claim get slower as the queue grows? 10,000 versus 500,000 queued.

One `gateway serve` on SQLite (WAL, synchronous=FULL), its operator's simulator `down`
and the breaker open. A few claims are queued through the API (POST /v1/claims -> 202);
one of them is the template that is then duplicated straight into the database with
INSERT ... SELECT (new ids, invoice numbers and queue times, older than any new claim;
one claim_history and one events row each, as the API writes), in batches of
--batch rows per transaction. At each size (--small, then --big claims queued) the
benchmark measures, in the same run:
  - POST /v1/claims answered 202 (queued): --requests claims over --concurrency clients,
    claims/s, p50 and p99;
  - one drain lease query (`gateway.queue.repository.lease_batch`, 50 claims, the
    gateway's own code, in a transaction rolled back) and the queue depth query behind
    GET /v1/operators and /metrics (`repository.depth`): the median of 5 runs each.
Target: big/small enqueue cost (p50 latency, and 1 / claims/s) under 1.5.
The database and config live in a temp dir; everything listens on 127.0.0.1;
subprocesses are killed on exit.
Run: .venv/bin/python bench/queue_growth.py [--small N] [--big N] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import (
    Procs,
    Result,
    claims_load,
    create_key,
    free_port,
    machine,
    trip_breaker,
    write_config,
)

TARGET_RATIO = 1.5
REPEATS = 5


@dataclass
class Size:
    claims: int
    result: Result
    lease_ms: float
    depth_ms: float
    fill_s: float
    db_mb: float


def _shifted(alias: str, column: str) -> str:
    """The template's instant moved back by (total - i) ms, in SQLAlchemy's text format."""
    return (f"strftime('%Y-%m-%d %H:%M:%f', {alias}.{column}, "
            f"'-' || ((:total - seq.i) / 1000.0) || ' seconds') || '000'")


def fill_statements(columns: list[str]) -> list[str]:
    """The three INSERT ... SELECT of one batch: claims, claim_history, events. Built from
    the table's own column names (PRAGMA table_info), never from outside input."""
    seq = ("WITH RECURSIVE seq(i) AS (SELECT :start UNION ALL SELECT i + 1 FROM seq "
           "WHERE i + 1 < :stop) ")
    claim_id = "'clm_0BENCH' || printf('%09d', seq.i)"
    overrides = {
        "id": claim_id,
        "invoice_number": "'G' || printf('%09d', seq.i)",
        "idempotency_key": "NULL",
        **{c: _shifted("t", c) for c in ("created_at", "updated_at", "queued_at",
                                           "next_attempt_at")},
    }
    select = ", ".join(overrides.get(c, f"t.{c}") for c in columns)
    return [
        f"{seq}INSERT INTO claims ({', '.join(columns)}) SELECT {select} "  # noqa: S608
        "FROM seq, claims AS t WHERE t.id = :template",
        f"{seq}INSERT INTO claim_history (claim_id, status, at, detail) "  # noqa: S608
        f"SELECT {claim_id}, h.status, {_shifted('h', 'at')}, h.detail FROM seq, "
        "claim_history AS h WHERE h.id = (SELECT min(id) FROM claim_history "
        "WHERE claim_id = :template)",
        f"{seq}INSERT INTO events (event_id, finess, type, claim_id, at) "  # noqa: S608
        f"SELECT 'evt_0BENCH' || printf('%09d', seq.i), e.finess, e.type, {claim_id}, "
        f"{_shifted('e', 'at')} FROM seq, events AS e WHERE e.id = (SELECT min(id) "
        "FROM events WHERE claim_id = :template)",
    ]


def prefill(db_path: Path, target: int, total: int, batch: int) -> float:
    """Add queued claims copied from one queued through the API until `target` claims
    exist, in transactions of `batch` claims; seconds taken."""
    t0 = time.monotonic()
    with sqlite3.connect(db_path, timeout=60, isolation_level=None) as conn:
        conn.execute("PRAGMA synchronous=FULL")
        template = conn.execute("SELECT id FROM claims WHERE status = 'queued' AND id NOT "
                                "LIKE 'clm_0BENCH%' ORDER BY created_at LIMIT 1").fetchone()[0]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(claims)")]
        statements = fill_statements(columns)
        have = conn.execute("SELECT count(*) FROM claims").fetchone()[0]
        first = conn.execute("SELECT count(*) FROM claims WHERE id LIKE 'clm_0BENCH%'") \
            .fetchone()[0]
        while have < target:
            n = min(batch, target - have)
            params = {"start": first, "stop": first + n, "total": total, "template": template}
            conn.execute("BEGIN IMMEDIATE")
            for statement in statements:
                conn.execute(statement, params)
            conn.execute("COMMIT")
            have += n
            first += n
    return time.monotonic() - t0


def db_queries(db_url: str) -> tuple[float, float, str]:
    """Median ms of one lease_batch (rolled back) and one depth query; the lease's plan."""
    from sqlmodel import col, select

    from gateway.queue import repository
    from gateway.storage.db import Database
    from gateway.storage.models import Claim, utcnow
    from gateway.storage.unit import UnitOfWork

    db = Database(db_url)
    try:
        lease, depth = [], []
        for _ in range(REPEATS):
            with UnitOfWork(db.engine) as session:
                session.begin()
                t0 = time.perf_counter()
                leased = repository.lease_batch(
                    session, operator="opera", owner="bench", limit=50, now=utcnow(),
                    interval_s=0.01, send_timeout_s=33.0)
                lease.append(time.perf_counter() - t0)
                assert len(leased) == 50, len(leased)
                session.rollback()
            t0 = time.perf_counter()
            db.read_now(repository.depth)
            depth.append(time.perf_counter() - t0)
        # The lease's main query (queued claims, due, oldest first), as lease_batch runs it.
        query = (select(Claim).where(col(Claim.operator) == "opera",
                                     col(Claim.status) == "queued",
                                     col(Claim.next_attempt_at) <= utcnow())
                 .order_by(col(Claim.queued_at)).limit(50))
        with db.engine.connect() as conn:
            compiled = query.compile(conn)
            params = tuple(compiled.construct_params()[name] for name in compiled.positiontup)
            binds = compiled._bind_processors
            params = tuple(binds[n](v) if n in binds else v
                           for n, v in zip(compiled.positiontup, params, strict=True))
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params).fetchall()
        plan_text = "; ".join(str(row[-1]) for row in plan)
        return statistics.median(lease) * 1000, statistics.median(depth) * 1000, plan_text
    finally:
        db.engine.dispose()


def report(sizes: list[Size], plans: list[str], args: argparse.Namespace) -> None:
    print(machine())
    print(f"\n{'queued':>9}{'fill s':>8}{'db MB':>8}{'requests':>9}{'conc':>6}{'req/s':>9}"
          f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'lease ms':>10}{'depth ms':>10}  codes")
    for s in sizes:
        r = s.result
        print(f"{s.claims:>9}{s.fill_s:>8.1f}{s.db_mb:>8.0f}{len(r.latencies):>9}"
              f"{args.concurrency:>6}{r.rps:>9.1f}{r.pct(0.5):>9.1f}{r.pct(0.99):>9.1f}"
              f"{r.errors:>8}{s.lease_ms:>10.1f}{s.depth_ms:>10.1f}  {r.codes_text()}")
    small, big = sizes
    cost = small.result.rps / big.result.rps
    p50 = big.result.pct(0.5) / small.result.pct(0.5)
    p99 = big.result.pct(0.99) / small.result.pct(0.99)
    print(f"\nbig / small: time per claim (1/req/s) x{cost:.2f}, p50 x{p50:.2f}, p99 x{p99:.2f}, "
          f"lease x{big.lease_ms / small.lease_ms:.1f}, depth x{big.depth_ms / small.depth_ms:.1f}")
    verdict = "met" if max(cost, p50) < TARGET_RATIO else "MISSED"
    print(f"target: enqueue cost ratio under {TARGET_RATIO}: x{cost:.2f} (p50 x{p50:.2f}) "
          f"-> {verdict}")
    for s, plan in zip(sizes, plans, strict=True):
        print(f"lease query plan at {s.claims}: {plan}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000, help="claims queued, first")
    parser.add_argument("--big", type=int, default=500_000, help="claims queued, then")
    parser.add_argument("--requests", type=int, default=1000, help="measured claims per size")
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent clients")
    parser.add_argument("--batch", type=int, default=50_000, help="rows per fill transaction")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="wall-clock cap per loop")
    args = parser.parse_args()
    sizes: list[Size] = []
    plans: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp_name, \
            Procs(Path(tmp_name)) as procs:
        sim_url = procs.simulator("opera")
        port, db_path = free_port(), procs.tmp / "gateway.db"
        db_url = f"sqlite:///{db_path}"
        config = write_config(procs.tmp, "growth", db_url, int(sim_url.rsplit(":", 1)[1]),
                              port)
        key = create_key(config)
        url, _ = procs.gateway(config, port)
        tripped = asyncio.run(trip_breaker(url, key, sim_url, secrets.token_hex(4)))
        print(f"breaker open after {tripped:.1f} s of claims to a `down` simulator", flush=True)
        for target in (args.small, args.big):
            fill_s = prefill(db_path, target, args.big, args.batch)
            lease_ms, depth_ms, plan = db_queries(db_url)
            with sqlite3.connect(db_path) as conn:  # measure from the same start each time
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db_mb = db_path.stat().st_size / 1e6
            print(f"{target} claims queued ({fill_s:.1f} s to fill, {db_mb:.0f} MB); "
                  "measuring", flush=True)
            result = asyncio.run(claims_load(f"{target} queued", url, key, args.requests,
                                             args.concurrency, args.max_seconds))
            sizes.append(Size(target, result, lease_ms, depth_ms, fill_s, db_mb))
            plans.append(plan)
    report(sizes, plans, args)


if __name__ == "__main__":
    main()
