"""What a write group pays around its own statements: handing it to a thread and back,
and its commit, with SQLite's checkpoints in the commit or in a thread of their own.

a. Handing a call to another thread and back, on uvloop as `gateway serve` runs, CPU of
   this process per call (median of --rounds interleaved rounds of --calls calls):
   a bare round trip between two threads over two queues (the yardstick), anyio's
   `to_thread.run_sync` (how write groups ran before), and `WriterThread.run` (how they
   run now, gateway/storage/writer.py).
b. Claims queued (breaker open, no receipt) through the intake's own code
   (`gateway.claims.service.submit`, no HTTP), --concurrency at a time, into two
   gateways built as `gateway serve` builds them, each on a fresh SQLite file, taking
   turns round after round so that the machine's drift falls on both:
     own    SQLite's own checkpoints, in the commit that takes the log past 1,000 pages
            (how it was before);
     thread the log copied back by `WalCheckpointer` (gateway/storage/checkpoints.py),
            the writers' own checkpoints only past 10,000 pages (now).
   Per gateway: claims/s and process CPU per claim (median of rounds), the commits'
   durations over all rounds (p50, p90, p99, max, and how many took over 3 ms), and the
   size of its WAL file at the end.
Run: .venv/bin/python bench/write_path.py [--calls N] [--seconds S] [--rounds R]
     [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio.to_thread
import structlog
import uvloop
from costs import CAPS, pharmacies
from harness import claim_of, gateway_in_process, machine
from sqlalchemy.engine import default

from gateway.claims import service
from gateway.claims.schemas import ClaimCreate
from gateway.main import settle_heap
from gateway.storage import db as storage_db
from gateway.storage.writer import WriterThread

BENEFICIARIES = 1000
GATEWAYS = ("own", "thread")
SLOW_COMMIT_MS = 3.0


def nothing() -> None:
    return None


async def handovers(calls: int, rounds: int) -> dict[str, list[float]]:
    """CPU µs per call of each way of running `nothing` in another thread and back."""
    requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
    answers: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def echo() -> None:
        while (item := requests.get()) is not None:
            answers.put(item)

    bare = threading.Thread(target=echo, daemon=True)
    bare.start()

    async def round_trip() -> None:  # blocks the loop: a yardstick, not a way to use
        requests.put(1)
        answers.get()

    writer = WriterThread("bench-writer")
    ways: dict[str, Callable[[], Awaitable[Any]]] = {
        "bare round trip between two threads (yardstick)": round_trip,
        "anyio.to_thread.run_sync (before)": lambda: anyio.to_thread.run_sync(nothing),
        "WriterThread.run (now)": lambda: writer.run(nothing),
    }
    spent: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, call in ways.items():
            for _ in range(200):
                await call()
            started = time.process_time()
            for _ in range(calls):
                await call()
            spent[name].append((time.process_time() - started) / calls * 1e6)
    requests.put(None)
    writer.stop()
    return spent


class Commits:
    """Every commit's duration, filed under the gateway being measured."""

    def __init__(self) -> None:
        self.gateway = ""
        self.ms: dict[str, list[float]] = {name: [] for name in ("", *GATEWAYS)}
        original = default.DefaultDialect.do_commit

        def timed(dialect: Any, connection: Any) -> None:
            started = time.perf_counter()
            original(dialect, connection)
            self.ms[self.gateway].append((time.perf_counter() - started) * 1000)

        default.DefaultDialect.do_commit = timed  # type: ignore[method-assign]


async def claims(seconds: float, rounds: int, concurrency: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    finesses = pharmacies(16)
    commits = Commits()
    rates: dict[str, list[float]] = {name: [] for name in GATEWAYS}
    cpu: dict[str, list[float]] = {name: [] for name in GATEWAYS}
    folder = Path(tempfile.mkdtemp(prefix="write-path-"))
    async with AsyncExitStack() as stack:
        gateways: dict[str, tuple[Any, list[Any]]] = {}
        for name in GATEWAYS:
            if name == "own":  # its connections open with SQLite's default threshold
                backstop, storage_db.BACKSTOP_PAGES = storage_db.BACKSTOP_PAGES, 1000
            context, principals = await gateway_in_process(stack, folder / name, {
                "name": "opera", "adapter": "reference", "base_url": "http://127.0.0.1:9",
                "insurers": ["80*"], "provisional": "none", "breaker_reset_s": 3600},
                finesses, CAPS)
            context.operators.get("opera").breaker.trip()
            if name == "own":
                context.db._checkpoints = None  # no thread: SQLite's commits copy the log
                await send(context, principals, finesses, "warm", 1.0, concurrency)
                storage_db.BACKSTOP_PAGES = backstop
            gateways[name] = (context, principals)
        settle_heap()
        for round_ in range(rounds):
            for name in GATEWAYS if round_ % 2 == 0 else GATEWAYS[::-1]:
                context, principals = gateways[name]
                commits.gateway = name
                started, cpu_started = time.perf_counter(), time.process_time()
                sent = await send(context, principals, finesses, f"{name}{round_}", seconds,
                                  concurrency)
                rates[name].append(sent / (time.perf_counter() - started))
                cpu[name].append((time.process_time() - cpu_started) / sent * 1000)
                commits.gateway = ""
        wal = {name: folder / f"{name}.db-wal" for name in GATEWAYS}
        wal_mb = {name: path.stat().st_size / 1e6 if path.exists() else 0.0
                  for name, path in wal.items()}  # before the last connection removes it
    print(f"\nb. claims queued, {concurrency} at a time, {rounds} rounds of {seconds:.0f} s "
          "per gateway, taking turns\n")
    print(f"{'':<8}{'claims/s':>10}{'CPU ms':>8}   commits: {'n':>6}{'p50':>7}{'p90':>7}"
          f"{'p99':>7}{'max':>7}  >{SLOW_COMMIT_MS:.0f} ms   WAL at the end")
    for name in GATEWAYS:
        times = sorted(commits.ms[name])
        count = len(times)

        def pct(q: float, times: list[float] = times, count: int = count) -> float:
            return times[min(count - 1, int(q * count))]

        print(f"{name:<8}{statistics.median(rates[name]):>10.0f}"
              f"{statistics.median(cpu[name]):>8.2f}   {count:>15}{pct(0.5):>7.2f}"
              f"{pct(0.9):>7.2f}{pct(0.99):>7.2f}{times[-1]:>7.2f}"
              f"{sum(t > SLOW_COMMIT_MS for t in times):>7}   "
              f"{wal_mb[name]:.1f} MB")
    ratio = statistics.median(rates["thread"]) / statistics.median(rates["own"])
    print(f"   claims/s, thread / own: x{ratio:.2f} (rounds: "
          + ", ".join(f"{t / o:.2f}" for t, o in zip(rates["thread"], rates["own"],
                                                     strict=True)) + ")")


async def send(context: Any, principals: list[Any], finesses: list[str], tag: str,
               seconds: float, concurrency: int) -> int:
    """Claims for `seconds`, `concurrency` at a time; how many were queued (202)."""
    deadline = time.monotonic() + seconds
    sent = [0]

    async def client(first: int) -> None:
        i = first
        while time.monotonic() < deadline:
            body = claim_of(f"{tag}-{i}", i % BENEFICIARIES)
            body["dispenser"] = {"finess": finesses[i % len(finesses)]}
            result = await service.submit(ctx=context, principal=principals[i % len(principals)],
                                          claim_in=ClaimCreate.model_validate(body),
                                          idempotency_key=None)
            if result.http_status != 202:
                raise SystemExit(f"a claim answered {result.http_status}")
            sent[0] += 1
            i += concurrency

    await asyncio.gather(*(client(c) for c in range(concurrency)))
    return sent[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000, help="calls per round in (a)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per round in (b)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    print(machine())
    spent = uvloop.run(handovers(args.calls, args.rounds))
    print(f"\na. a call handed to another thread and back, {args.calls} calls a round, "
          f"{args.rounds} rounds\n")
    print(f"{'':<50}{'CPU µs a call (median)':>24}   rounds")
    for name, values in spent.items():
        print(f"{name:<50}{statistics.median(values):>24.1f}   "
              + ", ".join(f"{v:.0f}" for v in values))
    uvloop.run(claims(args.seconds, args.rounds, args.concurrency))


if __name__ == "__main__":
    main()
