"""Round trips to PostgreSQL per write group and per claim, against the statements they carry.

Why: on PostgreSQL each round trip a write group waits for is waited for by every claim
of the group, and on shared cores it costs 0.2-0.6 ms (the server's process must be
scheduled), however small its statement. So what counts is not how many statements a
claim needs but how many times the writer must wait for an answer. Psycopg's pipeline
sends several statements in one round trip; this script counts both, in process.

Three gateways built in process as `gateway serve` builds them (`create_app`), each on
a fresh database of the PostgreSQL server of BENCH_POSTGRES_URL (created, then dropped),
their claims sent through the intake's own code (`gateway.claims.service.submit`, no
HTTP), --concurrency at a time over 4 pharmacies and 1,000 synthetic beneficiaries:
  queued  the operator's breaker open: queued (202), no receipt;
  card    the same, with a signed provisional receipt;
  sent    the operator healthy (bench/stub_operator.py, another process): sent and
          answered (201), the synchronous path: its intake and its answer's write.
Then the same one claim at a time (`alone`): a pharmacy's ordinary day, where a write
group holds one claim and pays its round trips alone.

Counted on psycopg's connection, in the writer thread: a statement sent outside a
pipeline is a round trip (and psycopg's BEGIN before it, when it opens the transaction,
another); a pipeline is one, whatever it carries; a COMMIT is one. Statements: every
statement sent, pipelined or not (an executemany counts once). The claims/s are
in-process figures, the event loop's work included, without HTTP: they compare builds,
not deployments.
Run: BENCH_POSTGRES_URL=postgresql://... .venv/bin/python bench/round_trips.py
     [--claims N] [--concurrency C] [--alone N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import structlog
from harness import (
    gateway_in_process,
    machine,
    postgres_database,
    stub_operator,
    submit_in_process,
)
from psycopg import pq

MODES = ("queued", "card", "sent")
BENEFICIARIES = 1000
PHARMACIES = 4


@dataclass
class Counts:
    statements: int = 0
    round_trips: int = 0
    groups: int = 0


class Counter:
    """Statements and round trips of the thread that runs write groups, while `counting`."""

    def __init__(self) -> None:
        self.now: Counts | None = None
        self.writer: int | None = None  # the writer thread's id, set by the first group

    def mine(self) -> Counts | None:
        return self.now if threading.get_ident() == self.writer else None

    def install(self) -> None:
        from gateway.storage import db

        counter = self
        execute, executemany = psycopg.Cursor.execute, psycopg.Cursor.executemany
        commit, pipeline = psycopg.Connection.commit, psycopg.Connection.pipeline
        write_group = db.Database._write_group

        def sent(cursor: psycopg.Cursor[Any]) -> None:
            counts = counter.mine()
            if counts is None:
                return
            counts.statements += 1
            connection = cursor.connection
            if connection._pipeline is None:  # noqa: SLF001 - psycopg's own flag
                counts.round_trips += 1
                idle = connection.info.transaction_status == pq.TransactionStatus.IDLE
                counts.round_trips += idle and not connection.autocommit  # its BEGIN

        def counted_execute(self: psycopg.Cursor[Any], *args: Any, **kwargs: Any) -> Any:
            sent(self)
            return execute(self, *args, **kwargs)

        def counted_executemany(self: psycopg.Cursor[Any], *args: Any, **kwargs: Any) -> Any:
            sent(self)
            return executemany(self, *args, **kwargs)

        def counted_commit(self: psycopg.Connection[Any]) -> None:
            counts = counter.mine()
            # psycopg sends nothing when the transaction has ended (a COMMIT pipelined)
            under_way = self.info.transaction_status != pq.TransactionStatus.IDLE
            if counts is not None and under_way:
                counts.statements += 1
                counts.round_trips += 1
            commit(self)

        @contextmanager
        def counted_pipeline(self: psycopg.Connection[Any]) -> Iterator[Any]:
            counts = counter.mine()
            if counts is not None:
                counts.round_trips += 1
            with pipeline(self) as piped:
                yield piped

        def counted_group(self: db.Database, works: Any) -> Any:
            counter.writer = threading.get_ident()
            if counter.now is not None:
                counter.now.groups += 1
            return write_group(self, works)

        psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = counted_executemany  # type: ignore[method-assign]
        psycopg.Connection.commit = counted_commit  # type: ignore[method-assign]
        psycopg.Connection.pipeline = counted_pipeline  # type: ignore[method-assign,assignment]
        db.Database._write_group = counted_group  # type: ignore[method-assign]


async def gateway(stack: AsyncExitStack, url: str, folder: Path, operator_url: str,
                  mode: str, finesses: list[str]) -> tuple[Any, list[Any]]:
    """An in-process gateway on `url` whose operator offers a card receipt in mode "card";
    its breaker open unless claims are to be sent."""
    from costs import CAPS

    context, principals = await gateway_in_process(stack, folder, {
        "name": "opera", "adapter": "reference", "base_url": operator_url,
        "insurers": ["80*"], "breaker_reset_s": 3600,
        "provisional": "card" if mode == "card" else "none"}, finesses, CAPS, database_url=url)
    if mode != "sent":
        context.operators.get("opera").breaker.trip()
    return context, principals


async def submit(context: Any, principals: list[Any], finesses: list[str], mode: str,
                 tag: str, claims: int, concurrency: int) -> float:
    """`submit_in_process`; the seconds it took."""
    started = time.perf_counter()
    await submit_in_process(context, principals, finesses, mode=mode, tag=tag, claims=claims,
                            concurrency=concurrency, beneficiaries=BENEFICIARIES)
    return time.perf_counter() - started


async def measure(args: argparse.Namespace, server: str, operator_url: str) -> None:
    from costs import pharmacies

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    counter = Counter()
    counter.install()
    finesses = pharmacies(PHARMACIES)
    print(machine())
    print(f"command: {' '.join([sys.executable.split('/')[-1], *sys.argv])}")
    print(f"claims: {args.claims} per mode, {args.concurrency} at a time; then {args.alone} "
          f"one at a time; {PHARMACIES} pharmacies, {BENEFICIARIES} beneficiaries\n")
    print(f"{'':14}{'claims/s':>10}{'groups':>9}{'statements':>12}{'round trips':>13}"
          f"{'round trips':>13}")
    print(f"{'':14}{'':>10}{'a claim':>9}{'a group':>12}{'a group':>13}{'a claim':>13}")
    rows: dict[str, Counts] = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode in MODES:
            with postgres_database(server, "bench_rt") as url:
                async with AsyncExitStack() as stack:
                    context, principals = await gateway(stack, url, Path(folder) / mode,
                                                        operator_url, mode, finesses)
                    await submit(context, principals, finesses, mode, "warm", 64,
                                 args.concurrency)
                    for label, claims, concurrency in ((mode, args.claims, args.concurrency),
                                                       (f"{mode} alone", args.alone, 1)):
                        counts = counter.now = Counts()
                        seconds = await submit(context, principals, finesses, mode,
                                               label.replace(" ", "-"), claims, concurrency)
                        counter.now = None
                        rows[label] = counts
                        groups = max(counts.groups, 1)
                        print(f"{label:<14}{claims / seconds:>10.0f}"
                              f"{counts.groups / claims:>9.2f}"
                              f"{counts.statements / groups:>12.1f}"
                              f"{counts.round_trips / groups:>13.1f}"
                              f"{counts.round_trips / claims:>13.2f}")
    queued = rows["queued"]
    carried = queued.statements / max(queued.round_trips, 1)
    print(f"\nqueued, {args.concurrency} at a time: {carried:.1f} statements a round trip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=1024, help="claims per mode")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--alone", type=int, default=64, help="claims one at a time")
    args = parser.parse_args()
    server = os.environ.get("BENCH_POSTGRES_URL")
    if not server:
        print(machine(load=False))
        print("skipped: BENCH_POSTGRES_URL is not set (a PostgreSQL server URL; a temporary "
              "database is made there for each gateway and dropped)")
        return
    with stub_operator() as operator_url:
        asyncio.run(measure(args, server, operator_url))


if __name__ == "__main__":
    main()
