"""What a view of the console's audit page costs as the trail grows (an entry per claim).

One SQLite file, --entries audit entries appended through the gateway's own AuditLog, and
signed heads every --head-every entries; then, each the median of --repeats:
  - the full check (`heads.verify_trail`: every entry's hash, link and seal, every head):
    what `gateway audit verify` runs, and what the page ran on every view before
    `audit.watch`;
  - the background's full walk (`TrailWatch.full_walk`, a chunk of entries per read and
    a rest after each), and the process's CPU it took;
  - a view after the walk with nothing new, and with --new entries appended since (what
    a view reads: the checkpoint, the entries after it, the heads since).
Run: .venv/bin/python bench/audit_view.py [--entries N] [--new N] [--repeats N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from harness import machine

from gateway.audit.heads import HeadKeys, HeadSigner, verify_trail
from gateway.audit.trail import AuditLog
from gateway.audit.watch import TrailWatch
from gateway.security.apikeys import Principal
from gateway.storage.db import Database
from gateway.storage.migrate import upgrade
from gateway.storage.unit import UnitOfWork

ACTOR = Principal(key_id="key_0123456789abcdef", role="pharmacy", finess="330001231",
                  operators=None)
BATCH = 5_000


def append(db: Database, log: AuditLog, count: int, head_every: int) -> None:
    signer, done = HeadSigner(bytes([9]) * 32), 0
    while done < count:
        size = min(BATCH, count - done, head_every - done % head_every)

        def entries(session: UnitOfWork, size: int = size, first: int = done) -> None:
            for index in range(first, first + size):
                log.append(session, ACTOR, "claim.submit", object_id=f"clm_{index:026d}",
                           outcome="queued", receipt_id=None)

        db.write_now(entries)
        done += size
        if done % head_every == 0:
            db.write_now(signer.sign)


def timed(work: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of `work`."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def timed_async(work: Callable[[], Awaitable[object]], repeats: int) -> float:
    async def run() -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            await work()
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=300_000)
    parser.add_argument("--new", type=int, default=1_000, help="entries appended after a walk")
    parser.add_argument("--head-every", type=int, default=2_000,
                        help="entries between two signed heads")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    keys = HeadKeys()
    keys.add_head_key(HeadSigner(bytes([9]) * 32).public_raw)
    log = AuditLog(bytes(range(32)))
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'audit.db'}"
        upgrade(url)
        db = Database(url)
        started = time.perf_counter()
        append(db, log, args.entries, args.head_every)
        print(f"{args.entries} entries appended in {time.perf_counter() - started:.1f} s\n")

        full = timed(lambda: db.read_now(lambda s: verify_trail(s, audit_log=log, keys=keys)),
                     args.repeats)
        trail = TrailWatch(db, log, lambda: keys)
        cpu = time.process_time()
        walk = timed_async(trail.full_walk, args.repeats)
        walk_cpu = (time.process_time() - cpu) * 1000 / args.repeats

        async def view_after_new() -> float:
            append(db, log, args.new, args.head_every)
            started = time.perf_counter()
            report = await trail.view()
            assert report.result is not None and report.result.ok, report
            return (time.perf_counter() - started) * 1000

        unchanged = timed_async(trail.view, args.repeats)
        fresh = statistics.median(asyncio.run(view_after_new()) for _ in range(args.repeats))
        db.engine.dispose()
    rows = [("full check (what each view ran before)", full),
            ("background full walk, with its rests", walk),
            ("  of which the process's CPU", walk_cpu),
            ("a view, nothing new since the last check", unchanged),
            (f"a view, {args.new} entries new since", fresh)]
    print(f"{'':<44}{'ms':>10}{'x the full check':>18}")
    for name, ms in rows:
        print(f"{name:<44}{ms:>10.1f}{ms / full:>18.4f}")


if __name__ == "__main__":
    main()
