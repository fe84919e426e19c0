"""GET /v1/operators and GET /metrics with 500,000 claims queued: under 20 ms?

Both show every operator's queued, pending and failed counts and its oldest queued claim.
They read the counts kept by triggers on `claims` (table `queue_depth`, migration 0015)
and the oldest claim from the queue index, instead of counting the queue on each call.

One `gateway serve` (SQLite, WAL, synchronous=FULL), its operator's simulator `down`
and the breaker open. A few claims are queued through the API; one is then duplicated
straight into the database with INSERT ... SELECT until --claims are queued
(bench/queue_growth.py's fill on SQLite, --batch rows a transaction; generate_series on
PostgreSQL, --pg-batch rows a transaction). The counting triggers run for every row, as
for any insert. On PostgreSQL each row of a transaction rewrites the same counter row,
whose earlier versions cannot be pruned before the commit: the trigger adds ~8 us a row
to a transaction of 500 rows, ~125 us a row to one of 20,000; hence smaller
transactions there. Then, in the same run, one after the other, --requests calls each
(after a warm-up, --concurrency clients):
  (a) GET /healthz: the baseline (no database): what HTTP and this client cost here;
  (b) GET /v1/operators with an operations key (the full board, counts included);
  (c) GET /metrics;
and, for comparison, the query every call ran before migration 0015 (a GROUP BY over
the claims queued, pending and failed): median of 3, run by this script.
The board's queued count must equal the claims counted in the database.
(d) The same on PostgreSQL, only if env BENCH_POSTGRES_URL is set: a temporary database
`gw_bench_<hex>` is created on that server and dropped WITH (FORCE) at the end; no
other database is touched. The filled table is VACUUM ANALYZEd, as autovacuum would.
Target: p99 of (b) and (c) under 20 ms.
Everything listens on 127.0.0.1; subprocesses are stopped on exit.
Run: .venv/bin/python bench/board_at_scale.py [--claims N] [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from harness import (
    Procs,
    Result,
    create_key,
    free_port,
    healthz_load,
    load,
    machine,
    operator_board,
    trip_breaker,
    write_config,
)
from outage_throughput import temporary_postgres
from queue_growth import prefill
from sqlalchemy import create_engine, text

TARGET_MS = 20.0
COUNTED_BEFORE = ("SELECT operator, status, count(*), min(queued_at) FROM claims "
                  "WHERE status IN ('queued', 'pending', 'failed') GROUP BY operator, status")


@dataclass
class Run:
    backend: str
    claims: int
    fill_s: float
    results: list[Result]
    counted_ms: float
    board_queued: int
    counted_queued: int


def _shifted(column: str) -> str:
    """The template's instant moved back by (total - i) ms: older than any new claim."""
    return f"t.{column} - (%(total)s - seq.i) * interval '1 millisecond'"


def prefill_postgres(db_url: str, target: int, batch: int) -> float:
    """Add queued claims copied from one queued through the API until `target` claims
    exist, in transactions of `batch` claims; then VACUUM ANALYZE; seconds taken."""
    import psycopg
    from sqlalchemy.engine import make_url

    conninfo = make_url(db_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    t0 = time.monotonic()
    with psycopg.connect(conninfo) as conn:
        template = conn.execute("SELECT id FROM claims WHERE status = 'queued' "
                                "ORDER BY created_at LIMIT 1").fetchone()
        assert template, "no claim queued through the API to copy"
        columns = [row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'claims' "
            "ORDER BY ordinal_position")]
        overrides = {
            "id": "'clm_0BENCH' || lpad(seq.i::text, 9, '0')",
            "invoice_number": "'G' || lpad(seq.i::text, 9, '0')",
            "idempotency_key": "NULL",
            **{c: _shifted(c) for c in ("created_at", "updated_at", "queued_at",
                                        "next_attempt_at")},
        }
        select = ", ".join(overrides.get(c, f"t.{c}") for c in columns)
        # built from the table's own column names, never from outside input
        statement = (f"INSERT INTO claims ({', '.join(columns)}) SELECT {select} "  # noqa: S608
                     "FROM generate_series(%(start)s, %(stop)s - 1) AS seq(i), claims AS t "
                     "WHERE t.id = %(template)s")
        have = conn.execute("SELECT count(*) FROM claims").fetchone()[0]  # type: ignore[index]
        first = 0
        while have < target:
            n = min(batch, target - have)
            conn.execute(statement, {"start": first, "stop": first + n, "total": target,
                                     "template": template[0]})
            conn.commit()
            have, first = have + n, first + n
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE claims")
    return time.monotonic() - t0


def counted(db_url: str) -> tuple[float, int]:
    """Median ms of the GROUP BY the board ran on every call before migration 0015, and
    the claims it counts queued."""
    from gateway.storage.db import sync_url

    engine = create_engine(sync_url(db_url))
    try:
        times, queued = [], 0
        with engine.connect() as conn:
            for _ in range(3):
                t0 = time.perf_counter()
                rows = conn.execute(text(COUNTED_BEFORE)).all()
                times.append(time.perf_counter() - t0)
                queued = sum(row[2] for row in rows if row[1] == "queued")
        return statistics.median(times) * 1000, queued
    finally:
        engine.dispose()


async def get_load(name: str, url: str, path: str, headers: dict[str, str],
                   args: argparse.Namespace) -> Result:
    async def send(client: httpx.AsyncClient, i: int) -> int:
        return (await client.get(path)).status_code

    return await load(Result(name, 200), url, headers, send, args.requests, args.concurrency,
                      args.max_seconds)


def run_gateway(procs: Procs, backend: str, db_url: str, sim_url: str,
                args: argparse.Namespace) -> Run:
    port = free_port()
    config = write_config(procs.tmp, f"board-{backend}", db_url,
                          int(sim_url.rsplit(":", 1)[1]), port)
    key = create_key(config)
    staff = create_key(config, role="operations")  # queue counts are for operations only
    url, proc = procs.gateway(config, port)
    try:
        tripped = asyncio.run(trip_breaker(url, key, sim_url, secrets.token_hex(4)))
        print(f"[{backend}] breaker open after {tripped:.1f} s of claims to a `down` "
              "simulator", flush=True)
        if backend == "sqlite":
            db_path = Path(db_url.removeprefix("sqlite:///"))
            fill_s = prefill(db_path, args.claims, args.claims, args.batch)
            with sqlite3.connect(db_path) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            fill_s = prefill_postgres(db_url, args.claims, args.pg_batch)
        print(f"[{backend}] {args.claims} claims ({fill_s:.1f} s to fill); measuring",
              flush=True)
        board = {"Authorization": f"Bearer {staff}"}
        results = [
            asyncio.run(healthz_load(f"a {backend} GET /healthz", url, args.requests,
                                     args.concurrency, args.max_seconds)),
            asyncio.run(get_load(f"b {backend} GET /v1/operators", url, "/v1/operators",
                                 board, args)),
            asyncio.run(get_load(f"c {backend} GET /metrics", url, "/metrics", {}, args)),
        ]
        row = operator_board(url, staff)
        counted_ms, counted_queued = counted(db_url)
        return Run(backend, args.claims, fill_s, results, counted_ms, row["queued"],
                   counted_queued)
    finally:
        procs.stop(proc)  # one gateway at a time


def report(runs: list[Run], args: argparse.Namespace) -> None:
    print(machine())
    print(f"\n{'path':<32}{'claims':>9}{'requests':>9}{'conc':>6}{'req/s':>9}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'errors':>8}  codes")
    for run in runs:
        for r in run.results:
            stopped = "  (stopped by --max-seconds)" if len(r.latencies) < args.requests else ""
            print(f"{r.name:<32}{run.claims:>9}{len(r.latencies):>9}{args.concurrency:>6}"
                  f"{r.rps:>9.1f}{r.pct(0.5):>9.1f}{r.pct(0.99):>9.1f}{r.errors:>8}  "
                  f"{r.codes_text()}{stopped}")
    print()
    verdicts = []
    for run in runs:
        base, *reads = run.results
        for r in reads:
            print(f"{r.name} / baseline: p50 x{r.pct(0.5) / base.pct(0.5):.2f}, "
                  f"p99 x{r.pct(0.99) / base.pct(0.99):.2f}")
            verdicts.append(r.pct(0.99) < TARGET_MS and not r.errors)
        same = "ok" if run.board_queued == run.counted_queued else "WRONG"
        print(f"[{run.backend}] counting per call, as before migration 0015 (GROUP BY, "
              f"median of 3): {run.counted_ms:.1f} ms; board queued={run.board_queued}, "
              f"counted {run.counted_queued} -> {same}")
        verdicts.append(same == "ok")
    print(f"target: p99 of GET /v1/operators and GET /metrics under {TARGET_MS:.0f} ms with "
          f"{args.claims} claims queued -> {'met' if all(verdicts) else 'MISSED'}")
    if not os.environ.get("BENCH_POSTGRES_URL"):
        print("PostgreSQL: skipped (BENCH_POSTGRES_URL not set)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=500_000, help="claims queued")
    parser.add_argument("--requests", type=int, default=300, help="measured calls per path")
    parser.add_argument("--concurrency", type=int, default=1, help="concurrent clients")
    parser.add_argument("--batch", type=int, default=50_000,
                        help="rows per fill transaction on SQLite")
    parser.add_argument("--pg-batch", type=int, default=5_000,
                        help="rows per fill transaction on PostgreSQL")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="wall-clock cap per loop")
    args = parser.parse_args()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-board-") as tmp_name, \
            Procs(Path(tmp_name)) as procs:
        sim_url = procs.simulator("opera")
        runs.append(run_gateway(procs, "sqlite", f"sqlite:///{procs.tmp / 'gateway.db'}",
                                sim_url, args))
        if server := os.environ.get("BENCH_POSTGRES_URL"):
            with temporary_postgres(server) as db_url:
                runs.append(run_gateway(procs, "postgres", db_url, sim_url, args))
    report(runs, args)


if __name__ == "__main__":
    main()
