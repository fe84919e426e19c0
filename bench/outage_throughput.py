"""Claims/s the gateway queues (202, durable commit) while an operator's breaker is open.

Measures, in one run and on the same machine:
  (a) baseline: GET /healthz of the gateway (no database, no operator) at the same
      concurrency: what the HTTP stack and this client cost on this machine;
  (b) POST /v1/claims to `gateway serve` on SQLite (WAL, synchronous=FULL, the default)
      with the operator's simulator `down` and its breaker open: every claim is
      committed as `queued` and answered 202;
  (c) the same on PostgreSQL, only if env BENCH_POSTGRES_URL is set: a temporary
      database `gw_bench_<hex>` is created on that server and dropped WITH (FORCE) at
      the end; no other database is touched.
Target: (b) >= 500 claims/s. Everything listens on 127.0.0.1; subprocesses are killed
on exit.
Run: .venv/bin/python bench/outage_throughput.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import (
    Procs,
    Result,
    claims_load,
    create_key,
    free_port,
    healthz_load,
    machine,
    operator_board,
    trip_breaker,
    write_config,
)
from sqlalchemy.engine import make_url

TARGET_RPS = 500.0


@contextmanager
def temporary_postgres(server_url: str) -> Iterator[str]:
    """CREATE DATABASE gw_bench_<hex> on the server of `server_url`; its URL; then DROP it."""
    import psycopg

    name = f"gw_bench_{secrets.token_hex(4)}"
    admin = make_url(server_url).set(drivername="postgresql")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(drivername="postgresql+psycopg", database=name) \
            .render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_gateway(procs: Procs, name: str, db_url: str, sim_url: str,
                args: argparse.Namespace, results: list[Result]) -> None:
    port = free_port()
    config = write_config(procs.tmp, name.split()[-1], db_url,
                          int(sim_url.rsplit(":", 1)[1]), port)
    key = create_key(config)
    board_key = create_key(config, role="operations")  # queue counts are for operations only
    url, proc = procs.gateway(config, port)
    try:
        if not results:
            results.append(asyncio.run(healthz_load(
                "a GET /healthz (baseline)", url, args.requests, args.concurrency,
                args.max_seconds)))
        tripped = asyncio.run(trip_breaker(url, key, sim_url, secrets.token_hex(4)))
        print(f"[{name}] breaker open after {tripped:.1f} s of claims to a `down` simulator")
        results.append(asyncio.run(claims_load(name, url, key, args.requests,
                                               args.concurrency, args.max_seconds)))
        row = operator_board(url, board_key)
        print(f"[{name}] after the load: state={row['state']} queued={row['queued']}")
    finally:
        procs.stop(proc)  # one gateway at a time: they share 2 cores


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(machine())
    print(f"\n{'path':<28}{'requests':>9}{'conc':>6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'errors':>8}  codes")
    for r in results:
        stopped = "  (stopped by --max-seconds)" if len(r.latencies) < args.requests else ""
        print(f"{r.name:<28}{len(r.latencies):>9}{args.concurrency:>6}{r.rps:>9.1f}"
              f"{r.pct(0.5):>9.1f}{r.pct(0.99):>9.1f}{r.errors:>8}  {r.codes_text()}{stopped}")
    base = results[0]
    print()
    for r in results[1:]:
        print(f"{r.name} / baseline: req/s x{r.rps / base.rps:.2f}, "
              f"p50 x{r.pct(0.5) / base.pct(0.5):.2f}, p99 x{r.pct(0.99) / base.pct(0.99):.2f}")
    sqlite = results[1]
    verdict = "met" if sqlite.rps >= TARGET_RPS and not sqlite.errors else "MISSED"
    print(f"target: queued claims/s on SQLite >= {TARGET_RPS:.0f}: {sqlite.rps:.1f} -> {verdict}")
    if not os.environ.get("BENCH_POSTGRES_URL"):
        print("PostgreSQL: skipped (BENCH_POSTGRES_URL not set)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000, help="measured requests per path")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent client workers")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="wall-clock cap per loop")
    args = parser.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp_name, \
            Procs(Path(tmp_name)) as procs:
        sim_url = procs.simulator("opera")
        run_gateway(procs, "b queued sqlite", f"sqlite:///{procs.tmp / 'gateway.db'}",
                    sim_url, args, results)
        if server := os.environ.get("BENCH_POSTGRES_URL"):
            with temporary_postgres(server) as db_url:
                run_gateway(procs, "c queued postgres", db_url, sim_url, args, results)
    report(results, args)


if __name__ == "__main__":
    main()
