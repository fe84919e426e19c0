"""What keeping the queue counts costs the claim intake, at the database (migration 0015).

Every claim queued inserts a claim row, and the triggers of migration 0015 add one to its
operator's `queue_depth` row in the same transaction. This measures claims stored per
second straight against the database, without HTTP or the gateway's Python around it
(where a few microseconds would drown), with the triggers:
  off    dropped (SQLite) or disabled (PostgreSQL): what the intake cost before;
  on     as migration 0015 makes them (SQLite);
  one    PostgreSQL, one counter row per operator and status for every connection:
         each transaction then holds that row locked from its insert to its commit, so
         concurrent intakes commit one after another instead of together;
  slots  PostgreSQL, as migration 0015 makes them: each connection writes the slot of
         its server process (`pg_backend_pid() % 64`).
Each transaction stores what the intake stores for a queued claim: the claim (600
bytes of sealed payload), its history step and its event, the claim first (the
intake's staged rows go in together at the end of its transaction). SQLite (WAL,
synchronous=FULL, the gateway's connection settings): one writer, --group claims a
transaction, as the gateway's group commit. PostgreSQL, only if env BENCH_POSTGRES_URL
is set: --connections connections, one claim a transaction, as the gateway's intake
there; a temporary database `gw_bench_<hex>` is created on that server and dropped
WITH (FORCE) at the end; no other database is touched. Rounds interleave the variants
(a b c, c b a, ...) so that none always runs first; each lasts --seconds after a 1 s
warm-up; medians printed.
Targets: on SQLite, whose one writer stores claims one after another, the triggers add
under 25 us a claim to the writer's time (1/claims/s; a queued claim costs the gateway
~1.2-1.5 ms of CPU, so under 2 %). On PostgreSQL the slots take the contention away:
with them the intake keeps over 85 % of its claims/s without triggers. What remains is
the triggers' own work on the server, ~20-35 us a claim, which shows here because the
server is kept saturated with the smallest transactions on 2 cores; one row for
everybody keeps about a quarter.
Run: .venv/bin/python bench/queue_depth_cost.py [--seconds S] [--rounds R]
     [--connections K] [--group G]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from harness import ROOT, machine
from outage_throughput import temporary_postgres
from sqlalchemy.engine import make_url

TARGET_US = 25.0
TARGET_RATIO = 0.85
MIGRATION = ROOT / "gateway/storage/migrations/versions/0015_queue_depth.py"
PAYLOAD = b"\x01" * 600


def migration() -> ModuleType:
    """Migration 0015 itself: its triggers are the ones measured."""
    spec = importlib.util.spec_from_file_location("queue_depth_0015", MIGRATION)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the claim, its history step, its event, with SQLite's placeholders ("?")
CLAIM = ("INSERT INTO claims (id, finess, invoice_number, request_hash, nir_hash, "
         "beneficiary_hash, operator, insurer_number, service_date, status, attempts, "
         "maybe_sent, cancellation_pending, amc_requested_cents, payload_enc, "
         "coverage_decision, created_at, updated_at, queued_at, next_attempt_at) "
         "VALUES (?, '330001231', ?, 'r', 'n', 'b', 'opera', '80000001', '2026-11-02', "
         "'queued', 0, false, false, 100, ?, 'not_needed', ?, ?, ?, ?)")
HISTORY = ("INSERT INTO claim_history (claim_id, status, at, detail) "
           "VALUES (?, 'queued', ?, 'received')")
EVENT = ("INSERT INTO events (event_id, finess, type, claim_id, at) "
         "VALUES (?, '330001231', 'claim.queued', ?, ?)")


def statements(mark: str) -> tuple[str, str, str]:
    """The three statements with the driver's placeholder `mark`."""
    claim, history, event = (sql.replace("?", mark) for sql in (CLAIM, HISTORY, EVENT))
    return claim, history, event


def measure(writers: int, store: Callable[[int, int], int], seconds: float) -> float:
    """Claims per second `writers` threads store, each calling `store(writer, i)` (which
    returns how many claims it committed) until told to stop."""
    stop = threading.Event()
    done = [0] * writers
    errors: list[BaseException] = []

    def run(number: int) -> None:
        i = 0
        try:
            while not stop.is_set():
                done[number] += store(number, i)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    before, started = sum(done), time.monotonic()
    time.sleep(seconds)
    after, elapsed = sum(done), time.monotonic() - started
    stop.set()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return (after - before) / elapsed


def rounds(variants: list[str], count: int) -> list[list[str]]:
    return [variants if n % 2 == 0 else variants[::-1] for n in range(count)]


def sqlite_run(path: Path, args: argparse.Namespace, m: ModuleType) -> dict[str, list[float]]:
    from gateway.storage.db import create_engine
    from gateway.storage.migrate import upgrade

    upgrade(f"sqlite:///{path}")
    claim, history, event = statements("?")
    # the gateway's own connection settings (WAL, synchronous=FULL, sub-journals in
    # memory, foreign keys): gateway.storage.db.configure_sqlite
    engine = create_engine(f"sqlite:///{path}")
    raw = engine.raw_connection()
    conn = cast(sqlite3.Connection, raw.driver_connection)

    def store(writer: int, i: int) -> int:
        now = "2026-11-02 10:00:00.000000"
        conn.execute("BEGIN IMMEDIATE")
        for n in range(args.group):
            key = f"clm_{time.monotonic_ns()}_{i}_{n}"
            conn.execute(claim, (key, key, PAYLOAD, now, now, now, now))
            conn.execute(history, (key, now))
            conn.execute(event, (f"evt_{key}", key, now))
        conn.execute("COMMIT")
        return int(args.group)

    def variant(name: str) -> None:
        for trigger in m.SQLITE_TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        if name == "on":
            for trigger, body in m.SQLITE_TRIGGERS.items():
                conn.execute(f"CREATE TRIGGER {trigger} {body}")

    results: dict[str, list[float]] = {}
    try:
        for order in rounds(["off", "on"], args.rounds):
            for name in order:
                variant(name)
                results.setdefault(name, []).append(measure(1, store, args.seconds))
                print(f"[sqlite] {name:<6}{results[name][-1]:>9.0f} claims/s", flush=True)
    finally:
        raw.close()
        engine.dispose()
    return results


def postgres_run(db_url: str, args: argparse.Namespace,
                 m: ModuleType) -> dict[str, list[float]]:
    import psycopg

    from gateway.storage.migrate import upgrade

    upgrade(db_url)
    conninfo = make_url(db_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    claim, history, event = statements("%s")
    connections = [psycopg.connect(conninfo) for _ in range(args.connections)]

    def store(writer: int, i: int) -> int:
        conn: Any = connections[writer]
        key = f"clm_{writer}_{time.monotonic_ns()}_{i}"
        conn.execute(claim, (key, key, PAYLOAD, *["now"] * 4))
        conn.execute(history, (key, "now"))
        conn.execute(event, (f"evt_{key}", key, "now"))
        conn.commit()
        return 1

    def variant(name: str) -> None:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            if name == "off":
                admin.execute("ALTER TABLE claims DISABLE TRIGGER USER")
                return
            admin.execute("ALTER TABLE claims ENABLE TRIGGER USER")
            function = m.POSTGRES_FUNCTION.replace("CREATE FUNCTION",
                                                   "CREATE OR REPLACE FUNCTION")
            if name == "one":
                function = function.replace(f"pg_backend_pid() % {m.SLOTS}", "0")
            admin.execute(function)

    results: dict[str, list[float]] = {}
    try:
        for order in rounds(["off", "one", "slots"], args.rounds):
            for name in order:
                variant(name)
                results.setdefault(name, []).append(
                    measure(args.connections, store, args.seconds))
                print(f"[postgres] {name:<6}{results[name][-1]:>9.0f} claims/s", flush=True)
    finally:
        for conn in connections:
            conn.close()
    return results


def report(runs: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    print(machine())
    print(f"\n{'database':<10}{'triggers':<10}{'claims/s (median)':>18}  runs")
    for backend, results in runs.items():
        for name, figures in results.items():
            print(f"{backend:<10}{name:<10}{statistics.median(figures):>18.0f}  "
                  + ", ".join(f"{x:.0f}" for x in figures))
    print()
    verdicts = []
    for backend, results in runs.items():
        off = statistics.median(results["off"])
        for name in [n for n in results if n != "off"]:
            rate = statistics.median(results[name])
            added_us = (1 / rate - 1 / off) * 1e6
            print(f"{backend} {name} / off: claims/s x{rate / off:.3f}, "
                  f"{added_us:+.1f} us a claim"
                  + ("" if name in ("on", "slots") else "  (not what migration 0015 does)"))
            if name == "on":
                verdicts.append(added_us < TARGET_US)
            elif name == "slots":
                verdicts.append(rate / off > TARGET_RATIO)
    print(f"target: SQLite under {TARGET_US:.0f} us a claim, PostgreSQL (slots) over "
          f"x{TARGET_RATIO} -> {'met' if all(verdicts) else 'MISSED'}")
    if not os.environ.get("BENCH_POSTGRES_URL"):
        print("PostgreSQL: skipped (BENCH_POSTGRES_URL not set)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds a run")
    parser.add_argument("--rounds", type=int, default=4, help="runs of each variant")
    parser.add_argument("--connections", type=int, default=16,
                        help="PostgreSQL: concurrent connections, a claim a transaction")
    parser.add_argument("--group", type=int, default=32,
                        help="SQLite: claims a transaction (the group commit)")
    args = parser.parse_args()
    m = migration()
    runs: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-depth-") as tmp:
        runs["sqlite"] = sqlite_run(Path(tmp) / "gateway.db", args, m)
    if server := os.environ.get("BENCH_POSTGRES_URL"):
        with temporary_postgres(server) as db_url:
            runs["postgres"] = postgres_run(db_url, args, m)
    report(runs, args)


if __name__ == "__main__":
    main()
