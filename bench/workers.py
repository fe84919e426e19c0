"""`gateway serve --workers 1` versus `--workers 2` on PostgreSQL, in the same run.

For each worker count, a fresh database `gw_bench_<hex>` on the server of env
BENCH_POSTGRES_URL (dropped WITH (FORCE) at the end; no other database is touched), the
fast stub operator (bench/stub_operator.py, not the FastAPI simulator: the gateway must
be what is measured) and `gateway serve --workers W` with drain_per_s = --drain-per-s
(100000 by default: the drain unthrottled; the workers share one schedule, so at 1000 the
W workers together should send 1,000 claims a second), then, one after the other:
  (a) yardstick: GET /healthz (no database, no operator): what the HTTP stack and the
      load generator give on this machine with W processes;
  (b) healthy: POST /v1/claims, the operator up: each claim sent synchronously and
      answered 201;
  (c) outage: the operator paused through the ops API (POST /v1/operators/opera/pause):
      each claim stored as queued and answered 202;
  (d) drain: the operator resumed; the time until nothing is queued or pending, and the
      rate over the steady part (the 10th to the 90th percentile of the claims' settle
      times, from the database) of every claim (c) queued. The stub's ledger must then
      hold each accepted claim exactly once: 0 duplicates, as many distinct keys as
      claims accepted in the database.
Load: wrk (one thread, --connections, --seconds after a --warmup-seconds unmeasured
warm-up on the same connections' server), each request with a fresh invoice number
(a generated Lua script). CPU: the share of one core used while measuring by the
gateway (parent and workers), wrk, the stub and every `postgres` process of this
machine (the shared server: other users' work shows there too).
Everything listens on 127.0.0.1 on free ports; subprocesses are stopped on exit.
Run: BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
     .venv/bin/python bench/workers.py [--seconds S] [--connections C] [--workers 1,2]
     [--drain-per-s R]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
from harness import (
    ROOT,
    Procs,
    create_key,
    free_port,
    machine,
    median,
    operator_board,
    wait_ready,
    write_config,
)
from outage_throughput import temporary_postgres

from gateway.demo.samples import sample_claim

POLL_S = 0.25
MARK = "@@INVOICE@@"


@dataclass
class Load:
    name: str
    expected: int
    requests: int = 0
    seconds: float = 0.0
    codes: dict[str, int] = field(default_factory=dict)
    errors: int = 0  # socket errors and timeouts, as wrk counts them
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core, per party

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    @property
    def unexpected(self) -> int:
        return self.errors + sum(n for code, n in self.codes.items()
                                 if code != str(self.expected))


@dataclass
class Drain:
    claims: int = 0
    seconds: float = float("nan")
    steady_rate: float = float("nan")
    finished: bool = False
    accepted: int = 0
    ledger_distinct: int = 0
    ledger_duplicates: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.finished and self.ledger_duplicates == 0
                and self.ledger_distinct == self.accepted)


@dataclass
class Run:
    workers: int
    loads: list[Load] = field(default_factory=list)
    drain: Drain = field(default_factory=Drain)


LUA = """
local threads, next_id = {}, 1
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
function init(args)
  prefix, n, statuses = args[1] .. "-" .. tid .. "-", 0, {}
end
function request()
  n = n + 1
  return wrk.format(METHOD, PATH, HEADERS, HEAD and (HEAD .. prefix .. n .. TAIL) or nil)
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  local codes = {}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      codes[tostring(code)] = (codes[tostring(code)] or 0) + count
    end
  end
  local e = summary.errors
  local parts = {}
  for code, count in pairs(codes) do table.insert(parts, '"' .. code .. '":' .. count) end
  io.write(string.format(
    'WRK {"requests":%d,"us":%d,"errors":%d,"p50":%d,"p99":%d,"codes":{%s}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), table.concat(parts, ",")))
end
"""


def lua_script(path: Path, method: str, route: str, headers: dict[str, str],
               body: str | None) -> Path:
    """A wrk script sending `body` with MARK replaced by a fresh invoice number."""
    head, tail = body.split(MARK) if body else (None, None)
    lines = [f"METHOD, PATH = {json.dumps(method)}, {json.dumps(route)}",
             "HEADERS = {" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}"
                                       for k, v in headers.items()) + "}",
             f"HEAD = {_lua_string(head)}", f"TAIL = {_lua_string(tail)}"]
    path.write_text("\n".join(lines) + LUA)
    return path


def _lua_string(text: str | None) -> str:
    return "nil" if text is None else "[==[" + text + "]==]"


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its living descendants (Linux /proc)."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            total += _cpu_of(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def postgres_cpu() -> dict[str, float]:
    """CPU seconds used so far by each process named `postgres` on this machine."""
    used = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    used[f"postgres {entry.name}"] = _cpu_of(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return used


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """CPU of the parties while something is measured, as shares of one core."""

    def __init__(self, parties: dict[str, int]) -> None:
        self.parties = parties

    def read(self) -> dict[str, float]:
        return {**{name: tree_cpu(pid) for name, pid in self.parties.items()},
                **postgres_cpu()}

    @staticmethod
    def shares(before: dict[str, float], after: dict[str, float],
               seconds: float) -> dict[str, float]:
        """Per party; the postgres processes added up (those that ended meanwhile are
        missed, those that began count whole)."""
        shares: dict[str, float] = {}
        for name, used in after.items():
            party = name.split()[0]
            shares[party] = shares.get(party, 0.0) + (used - before.get(name, 0.0)) / seconds
        return shares


def wrk(script: Path, url: str, seconds: float, connections: int, tag: str) -> dict[str, Any]:
    """Run wrk to completion; the figures its script prints (the WRK line)."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout",
            "10s", "-s", str(script), url, "--", tag]
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60,  # noqa: S603
                          check=False)
    found = re.search(r"^WRK (\{.*\})$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not found:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr}")
    figures: dict[str, Any] = json.loads(found.group(1))
    return figures


def measure(name: str, expected: int, script: Path, url: str, args: argparse.Namespace,
            meter: Meter, tag: str) -> Load:
    """A warm-up, then the measured wrk run and the CPU each party used meanwhile (wrk's
    own from this process's children accounting: wrk is the only child waited for)."""
    wrk(script, url, args.warmup_seconds, args.connections, f"{tag}w")
    before, children, t0 = meter.read(), os.times(), time.monotonic()
    figures = wrk(script, url, args.seconds, args.connections, tag)
    elapsed, after = time.monotonic() - t0, os.times()
    cpu = Meter.shares(before, meter.read(), elapsed)
    cpu["wrk"] = (after.children_user - children.children_user
                  + after.children_system - children.children_system) / elapsed
    return Load(name, expected, requests=int(figures["requests"]),
                seconds=int(figures["us"]) / 1e6,
                codes={str(code): int(n) for code, n in figures["codes"].items()},
                errors=int(figures["errors"]), p50_ms=int(figures["p50"]) / 1000,
                p99_ms=int(figures["p99"]) / 1000, cpu=cpu)


def settle_rate(db_url: str) -> tuple[int, float]:
    """Accepted claims in the database, and the steady rate (10th to 90th percentile of
    the drained claims' settle times) of those settled after being queued."""
    import psycopg
    from sqlalchemy.engine import make_url

    conninfo = make_url(db_url).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(conninfo) as conn:
        accepted = conn.execute(
            "SELECT count(*) FROM claims WHERE status = 'accepted'").fetchone()
        rows = conn.execute(
            "SELECT updated_at FROM claims WHERE status = 'accepted' "
            "AND first_http_status = 202 ORDER BY updated_at").fetchall()
    times = [row[0].replace(tzinfo=UTC).timestamp() for row in rows]
    rate = float("nan")
    if len(times) >= 10:
        lo, hi = int(0.1 * len(times)), int(0.9 * len(times)) - 1
        if times[hi] > times[lo]:
            rate = (hi - lo) / (times[hi] - times[lo])
    return int(accepted[0]) if accepted else 0, rate


def ops(url: str, key: str, verb: str) -> None:
    httpx.post(f"{url}/v1/operators/opera/{verb}", json={"reason": "bench"},
               headers={"Authorization": f"Bearer {key}"}, timeout=10).raise_for_status()


def drain(url: str, board_key: str, stub_url: str, db_url: str, args: argparse.Namespace,
          meter: Meter) -> Drain:
    result = Drain()
    row = operator_board(url, board_key, timeout=30)
    result.claims = row["queued"] + row["pending"]
    before, t0 = meter.read(), time.monotonic()
    ops(url, board_key, "resume")
    while time.monotonic() - t0 < args.drain_max_seconds:
        time.sleep(POLL_S)
        row = operator_board(url, board_key, timeout=30)
        if row["queued"] + row["pending"] == 0:
            result.finished = True
            break
    result.seconds = time.monotonic() - t0
    result.cpu = Meter.shares(before, meter.read(), result.seconds)
    result.accepted, result.steady_rate = settle_rate(db_url)
    ledger = httpx.get(f"{stub_url}/_ledger", timeout=30).json()
    result.ledger_distinct, result.ledger_duplicates = ledger["distinct"], ledger["duplicates"]
    return result


def one_run(procs: Procs, server: str, workers: int, args: argparse.Namespace) -> Run:
    run = Run(workers)
    with temporary_postgres(server) as db_url:
        stub_port, port = free_port(), free_port()
        stub_url = f"http://127.0.0.1:{stub_port}"
        stub_log = procs.tmp / f"stub-{workers}.log"
        with stub_log.open("ab") as out:
            stub = subprocess.Popen(  # noqa: S603 - our own script
                [sys.executable, str(ROOT / "bench" / "stub_operator.py"), "--port",
                 str(stub_port)], stdout=out, stderr=subprocess.STDOUT)
        procs.running.append(stub)
        wait_ready(f"{stub_url}/health", stub, stub_log)
        config = write_config(procs.tmp, f"workers-{workers}", db_url, stub_port, port,
                              operator={"drain_per_s": args.drain_per_s, "drain_ramp_s": 0})
        key, board_key = create_key(config), create_key(config, role="operations")
        url = f"http://127.0.0.1:{port}"
        gateway = procs.start(["serve", "--config", str(config), "--port", str(port),
                               "--workers", str(workers)], f"gateway-{workers}.log",
                              f"{url}/healthz")
        wait_workers(url, workers)
        meter = Meter({"gateway": gateway.pid, "stub": stub.pid})
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        body = json.dumps(sample_claim(MARK))
        healthz = lua_script(procs.tmp / "healthz.lua", "GET", "/healthz", {}, None)
        claims = lua_script(procs.tmp / "claims.lua", "POST", "/v1/claims", auth, body)
        tag = f"W{workers}"
        print(f"[{workers} worker(s)] measuring", flush=True)
        run.loads.append(measure("a GET /healthz", 200, healthz, url, args, meter, f"{tag}h"))
        run.loads.append(measure("b healthy 201", 201, claims, url, args, meter, f"{tag}s"))
        ops(url, board_key, "pause")
        run.loads.append(measure("c outage 202", 202, claims, url, args, meter, f"{tag}q"))
        run.drain = drain(url, board_key, stub_url, db_url, args, meter)
        procs.stop(gateway)
        procs.stop(stub)
    return run


def wait_workers(url: str, workers: int, timeout: float = 60.0) -> None:
    """Until /readyz answers 200, then a while for the other workers' start (an answer
    does not say which worker gave it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    time.sleep(1.0 + workers)


def cpu_text(cpu: dict[str, float]) -> str:
    return " ".join(f"{name} {share:.0%}" for name, share in cpu.items())


def report(runs: list[Run], args: argparse.Namespace) -> None:
    print(machine())
    print(f"wrk: 1 thread, {args.connections} connections, {args.seconds:.0f} s measured "
          f"after {args.warmup_seconds:.0f} s of warm-up; CPU in shares of one core")
    print(f"\n{'workers':>7}  {'load':<16}{'requests':>9}{'req/s':>9}{'p50 ms':>8}"
          f"{'p99 ms':>8}{'unexp.':>7}  codes; CPU while measuring")
    for run in runs:
        for load in run.loads:
            codes = ", ".join(f"{k}:{v}" for k, v in sorted(load.codes.items()))
            print(f"{run.workers:>7}  {load.name:<16}{load.requests:>9}{load.rps:>9.1f}"
                  f"{load.p50_ms:>8.1f}{load.p99_ms:>8.1f}{load.unexpected:>7}  {codes}; "
                  f"{cpu_text(load.cpu)}")
    print(f"\ndrain_per_s = {args.drain_per_s:g}")
    print(f"{'workers':>7}  {'drained':>8}{'s':>7}{'steady/s':>10}  ledger; CPU while draining")
    for run in runs:
        d = run.drain
        print(f"{run.workers:>7}  {d.claims:>8}{d.seconds:>7.1f}{d.steady_rate:>10.1f}  "
              f"{d.ledger_distinct} distinct for {d.accepted} accepted, "
              f"{d.ledger_duplicates} duplicates -> {'ok' if d.ok else 'NOT OK'}"
              f"{'' if d.finished else ' (NOT FINISHED)'}; {cpu_text(d.cpu)}")
    counts = sorted({run.workers for run in runs})
    if len(counts) >= 2:
        low, high = counts[0], counts[-1]
        print(f"\n{high} workers / {low} (medians over the runs of each count):")

        def ratio(figures: list[tuple[int, float]]) -> float:
            return (median([value for workers, value in figures if workers == high])
                    / median([value for workers, value in figures if workers == low]))

        for index, load in enumerate(runs[0].loads):
            rps = ratio([(r.workers, r.loads[index].rps) for r in runs])
            p99 = ratio([(r.workers, r.loads[index].p99_ms) for r in runs])
            print(f"{load.name}: req/s x{rps:.2f}, p99 x{p99:.2f}")
        print(f"d drain: steady/s x{ratio([(r.workers, r.drain.steady_rate) for r in runs]):.2f}")
    verdict = all(run.drain.ok for run in runs)
    print(f"drain: every claim sent once, none twice -> {'ok' if verdict else 'NOT OK'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per load")
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", default="1,2",
                        help="worker counts, in order: 1,2,2,1 interleaves two rounds")
    parser.add_argument("--drain-max-seconds", type=float, default=120.0)
    parser.add_argument("--drain-per-s", type=float, default=100000.0,
                        help="the operator's drain_per_s (default: unthrottled)")
    args = parser.parse_args()
    server = os.environ.get("BENCH_POSTGRES_URL", "")
    if not server or not shutil.which("wrk"):
        print(machine(load=False))
        print("skipped: " + ("BENCH_POSTGRES_URL is not set (a PostgreSQL server URL; a "
                             "temporary database is made there and dropped)"
                             if not server else "wrk is not installed"))
        return
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp_name, \
            Procs(Path(tmp_name)) as procs:
        for workers in (int(w) for w in args.workers.split(",")):
            runs.append(one_run(procs, server, workers, args))
    report(runs, args)
    if not all(run.drain.ok for run in runs):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
