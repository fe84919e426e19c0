"""What a claim costs the gateway: every figure of the cost targets, with its yardstick, in one run.

One command, one machine, one run, so that the ratios mean something:
  a. yardstick: the stand-in operator (bench/stub_operator.py) called directly;
  b. outage mode: claims queued (202) while the operator's breaker is open, no receipt,
     and with a signed provisional receipt (`provisional = "card"`): claims/s, and the
     gateway's CPU per claim; the receipt's cost is 1 - with / without;
  c. the synchronous path, operator healthy, 16 connections: claims/s and p50, against
     0.7 x (b) and 25 ms.
     The gateways of (b) and (c) are up at once and measured in --slices alternate
     slices (none, card, sync, sync, card, none), so that the machine's drift falls on
     all alike (a bare CPU loop's time moves by +-25 % from second to second on these
     shared cores): claims/s and p50 are the slices' median, p99 the worst slice's, and
     each ratio is also printed slice by slice. The outage gateways call a stand-in
     operator of their own, kept down;
  d. fail-fast as pharmacies see it: an open loop from 50 clients at half the capacity
     measured in (b) (or --open-loop-rate), latency counted from each claim's due time:
     p99 against 20 ms, and its yardstick: the same loader at the same rate against the
     stand-in operator directly (what the machine and the loader add to any p99 here);
     then --alone claims one at a time, 20 ms apart (no target: what a
     claim's own write group costs in latency, round trips included);
  e. the drain after recovery: unthrottled against 0.8 x (b), then at `drain_per_s` 100,
     500 and 1,000 (within 10 %), with the operator's count of claims received twice
     (must be 0); with --history N, the drain's database first holds N claims accepted
     on earlier days, as a gateway's does after weeks of service (its queries must not
     read them).
The load is spread over --pharmacies pharmacies (one API key each) and 1,000 synthetic
beneficiaries, as real traffic is; `--pharmacies 1` shows what one pharmacy alone gets.
Every gateway runs on a fresh database: a SQLite file, and with BENCH_POSTGRES_URL (a
PostgreSQL server URL; a database is created for each gateway and dropped after) the
same steps again on PostgreSQL, with each figure's PostgreSQL/SQLite ratio (target: at
least 0.5). Load comes from `wrk` (Debian package wrk) with bench/wrk_claims.lua; without
wrk, from the Python loader of bench/harness.py, which shares the cores it measures.
The operators board and /metrics at 500,000 queued claims: bench/board_at_scale.py;
1 versus 2 worker processes: bench/workers.py (both run last with --all).
Everything listens on 127.0.0.1; every process is stopped on exit.
Run: .venv/bin/python bench/costs.py [--seconds S] [--pharmacies N] [--drain-rates R,R] [--alone N]
     [--slices N] [--all]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
from harness import (
    GATEWAY,
    ROOT,
    Procs,
    Result,
    claim_of,
    cpu_seconds,
    free_port,
    machine,
    postgres_database,
    set_fault,
    wait_ready,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from gateway.demo.samples import DEMO_FINESS

HERE = Path(__file__).resolve().parent
WRK = shutil.which("wrk")
BENEFICIARIES = 1000
HUGE = 10**12
CAPS = {"max_amc_cents_per_claim": HUGE, "max_amc_cents_per_beneficiary_per_day": HUGE,
        "max_outstanding_cents_per_pharmacy": HUGE}
DRAIN_RATES = (100, 500, 1000)
FILL_ROUNDS = 5  # a fill shorter than a second is a second: 600 claims where 1,350 were asked
SYNC_CONNECTIONS = 16
LOADS = {  # per gateway of the outage step: its label and wrk's connections
    "none": ("b outage, no receipt", 50),
    "card": ("b outage, signed receipt", 50),
    "sync": (f"c synchronous, {SYNC_CONNECTIONS} connections", SYNC_CONNECTIONS),
}


Served = tuple[str, dict[str, str], Path, "subprocess.Popen[bytes]"]  # url, keys, bodies, process


@dataclass
class Load:
    """One load's outcome: answered claims/s, latency percentiles (ms), status counts,
    and the gateway's CPU per request (ms) when it was measured."""

    name: str
    rps: float
    p50: float
    p99: float
    codes: dict[str, int] = field(default_factory=dict)
    cpu_ms: float = float("nan")
    writer: Writer | None = None

    def line(self) -> str:
        codes = ", ".join(f"{k}:{v}" for k, v in sorted(self.codes.items()))
        cpu = f"{self.cpu_ms:7.2f}" if self.cpu_ms == self.cpu_ms else "      -"
        writer = f"{self.writer.busy:5.0%} x{self.writer.per_group:4.1f}" if self.writer else "-"
        return (f"{self.name:<40}{self.rps:>9.0f}{self.p50:>9.1f}{self.p99:>9.1f}{cpu}"
                f"{writer:>13}  {codes}")


@dataclass(frozen=True)
class Writer:
    """The gateway's database writer over one load, from its /metrics: the share of the
    time it was busy with write groups, and the works (claims stored, answers recorded)
    a group held on average."""

    busy: float
    per_group: float


def writer_totals(url: str) -> tuple[float, float, float]:
    """The gateway's write groups so far: (groups, works, seconds the writer was busy)."""
    samples = {sample.name: sample.value
               for family in text_string_to_metric_families(
                   httpx.get(f"{url}/metrics", timeout=10).text)
               for sample in family.samples if not sample.labels}
    return (samples.get("gateway_write_group_seconds_count", 0.0),
            samples.get("gateway_write_group_works_sum", 0.0),
            samples.get("gateway_write_group_seconds_sum", 0.0))


def watch_writer(url: str) -> Callable[[], Writer]:
    """A function that, called once the load is over, tells what the gateway's writer did
    since this call."""
    groups, works, busy = writer_totals(url)
    started = time.perf_counter()

    def since() -> Writer:
        elapsed = time.perf_counter() - started
        groups_now, works_now, busy_now = writer_totals(url)
        return Writer((busy_now - busy) / elapsed,
                      (works_now - works) / max(1.0, groups_now - groups))

    return since


def luhn_finess(i: int) -> str:
    """A synthetic FINESS number with a valid Luhn key (the gateway does not require one)."""
    stem = f"33{i:06d}"
    total = 0
    for index, digit in enumerate(reversed(stem)):
        value = int(digit) * (2 if index % 2 == 0 else 1)
        total += value - 9 if value > 9 else value
    return stem + str((10 - total % 10) % 10)


def pharmacies(n: int) -> list[str]:
    return [DEMO_FINESS] + [luhn_finess(i) for i in range(1, n)]


def create_keys(config: Path, finesses: list[str]) -> dict[str, str]:
    """One pharmacy key per FINESS (created at once), and "ops": an operations key."""
    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([GATEWAY, "keys", "create", "--config", str(config), *args],  # noqa: S603
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)

    procs = {"ops": start("--role", "operations")}
    procs["ops"].wait(timeout=60)  # the first one migrates the database
    procs |= {finess: start("--role", "pharmacy", "--finess", finess) for finess in finesses}
    keys = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        if proc.returncode:
            raise SystemExit(f"keys create failed: {err[-500:]}")
        keys[name] = out.strip().splitlines()[-1]
    return keys


def bodies_file(tmp: Path, name: str, keys: dict[str, str], finesses: list[str]) -> Path:
    """Lines "<key>\\t<claim>" for wrk: beneficiaries in turn, pharmacies in turn; one file
    per gateway (`name`): each has keys of its own."""
    path = tmp / f"bodies-{name}.tsv"
    with path.open("w") as out:
        for b in range(BENEFICIARIES):
            finess = finesses[b % len(finesses)]
            claim = claim_of("INV-X", b)
            claim["dispenser"] = {"finess": finess}
            out.write(f"{keys[finess]}\t{json.dumps(claim, separators=(',', ':'))}\n")
    return path


def wrk(name: str, url: str, bodies: Path, connections: int, seconds: float,
        proc: subprocess.Popen[bytes] | None = None, path: str = "/v1/claims",
        database: str = "") -> Load:
    """A closed-loop load with wrk (two threads), or the Python loader without wrk."""
    cpu = cpu_seconds(proc) if proc else 0.0
    profiler = profile(f"{database} {name}".strip(), proc, seconds)
    writer = watch_writer(url) if proc else None
    if WRK is None:
        load = asyncio.run(python_load(name, url, read_bodies(bodies), connections, seconds,
                                       path))
    else:
        env = {**os.environ, "WRK_BODIES": str(bodies), "WRK_PATH": path,
               "WRK_PREFIX": secrets.token_hex(4)}
        out = subprocess.run(  # noqa: S603
            [WRK, "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
             "-s", str(HERE / "wrk_claims.lua"), url], env=env, capture_output=True, text=True,
            timeout=seconds + 60, check=True).stdout
        found = json.loads(next(line for line in out.splitlines()
                                if line.startswith("WRK-RESULT ")).split(" ", 1)[1])
        load = Load(name, found["requests"] / found["seconds"], found["p50"], found["p99"],
                    found["codes"])
        if found["socket_errors"]:
            load.codes["socket errors"] = found["socket_errors"]
    if writer is not None:
        load.writer = writer()
    if proc is not None:
        load.cpu_ms = (cpu_seconds(proc) - cpu) * 1000 / max(1, sum(load.codes.values()))
    if profiler is not None:
        profiler.wait(timeout=60)
    return load


def profile(name: str, proc: subprocess.Popen[bytes] | None,
            seconds: float) -> subprocess.Popen[bytes] | None:
    """With BENCH_PROFILE=DIR (and py-spy installed beside the gateway; it is not a
    dependency), the gateway sampled during this load: DIR/<database>-<load>.txt, py-spy's raw
    folded stacks per thread, for flame graphs or a grep of where the CPU goes. Only the
    thread holding the GIL is sampled, unless BENCH_PROFILE_WAITS=1: then every thread,
    waiting or not (where a thread waits, for PostgreSQL say)."""
    folder, spy = os.environ.get("BENCH_PROFILE"), shutil.which("py-spy", path=str(HERE.parent
                                                                                 / ".venv/bin"))
    if not folder or proc is None or spy is None:
        return None
    out = Path(folder) / f"{''.join(c if c.isalnum() else '-' for c in name)}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    sampled = "--idle" if os.environ.get("BENCH_PROFILE_WAITS") == "1" else "--gil"
    return subprocess.Popen([spy, "record", "-p", str(proc.pid), "-d", str(max(1, round(seconds))),  # noqa: S603
                             "-r", "200", sampled, "--threads", "-f", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def python_load(name: str, url: str, lines: list[list[str]], connections: int,
                      seconds: float, path: str) -> Load:
    tag, result, started = secrets.token_hex(4), Result(name, 0), time.perf_counter()

    async def worker(client: httpx.AsyncClient, first: int) -> None:
        i = first
        while time.perf_counter() - started < seconds:
            key, body = lines[i % len(lines)]
            invoice = f"{tag}-{i}"
            headers = {"Content-Type": "application/json"}
            if key:
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers["Idempotency-Key"] = f"clm_{invoice}"
                body = body.replace('"invoice_number"', f'"claim_id":"clm_{invoice}",'
                                                        '"invoice_number"', 1)
            t0 = time.perf_counter()
            answer = await client.post(path, content=body.replace("INV-X", invoice, 1),
                                       headers=headers)
            result.latencies.append(time.perf_counter() - t0)
            result.codes[str(answer.status_code)] += 1
            i += connections

    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        await asyncio.gather(*(worker(client, i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    return Load(name, len(result.latencies) / elapsed, result.pct(0.5), result.pct(0.99),
                dict(result.codes))


@contextmanager
def database(kind: str, tmp: Path, name: str) -> Iterator[str]:
    """A fresh database: a SQLite file, or a PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'{name}.db'}"
        return
    with postgres_database(os.environ["BENCH_POSTGRES_URL"], f"bench_{name}") as url:
        yield url


class Run:
    """The steps on one kind of database, each gateway on its own fresh database."""

    def __init__(self, kind: str, procs: Procs, stub_url: str, args: argparse.Namespace,
                 down_url: str | None = None):
        self.kind, self.procs, self.stub_url, self.args = kind, procs, stub_url, args
        self.down_url = down_url or stub_url  # the outage gateways' operator, kept down
        self.finesses = pharmacies(args.pharmacies)
        self.loads: dict[str, Load] = {}
        self.receipt_costs: list[float] = []  # 1 - with / without, per slice pair
        self.sync_ratios: list[float] = []  # synchronous / outage, per slice pair
        self.notes: list[str] = []
        self.database_urls: dict[str, str] = {}  # per gateway name

    @contextmanager
    def gateway(self, name: str, operator_url: str | None = None,
                **operator: object) -> Iterator[Served]:
        operator_url = operator_url or self.stub_url
        with database(self.kind, self.procs.tmp, name) as url:
            self.database_urls[name] = url
            port = free_port()
            config = write_config(self.procs.tmp, f"{self.kind}-{name}", url,
                                  int(operator_url.rsplit(":", 1)[1]), port,
                                  operator={"breaker_reset_s": 600, **operator},
                                  sections={"provisional": CAPS})
            keys = create_keys(config, self.finesses)
            bodies = bodies_file(self.procs.tmp, f"{self.kind}-{name}", keys, self.finesses)
            gateway_url, proc = self.procs.gateway(config, port)
            try:
                yield gateway_url, keys, bodies, proc
            finally:
                self.procs.stop(proc)
                set_fault(operator_url, "ok")

    def outages(self, receipt: bool, sync: bool) -> None:
        """Outage mode without a receipt (the yardstick of every other figure), and with
        one when `receipt`, and the synchronous path when `sync`: the gateways up at once
        and measured in alternate slices (none, card, sync, sync, card, none, ...), so
        that the machine's drift over the run falls on all alike. Measured one after the
        other, the receipt's cost read 14 % and 32 % in two runs of the same build, and
        the synchronous ratio x0.30 and x0.77. The outage gateways call an operator of
        their own, kept down; the synchronous one, the healthy one. Then the fail-fast
        figures, on the first gateway."""
        with ExitStack() as stack:
            plain = stack.enter_context(self.gateway("outage-none", self.down_url,
                                                     provisional="none"))
            gateways = {"none": plain}
            if receipt:
                gateways["card"] = stack.enter_context(self.gateway(
                    "outage-card", self.down_url, provisional="card"))
            for served in gateways.values():
                self.ready(served)
            if sync:
                gateways["sync"] = stack.enter_context(self.gateway("sync"))
                url, _keys, bodies, _proc = gateways["sync"]
                wrk("warm-up", url, bodies, SYNC_CONNECTIONS, 2)
            self.slices(gateways)
            url, _keys, bodies, _proc = plain
            rate = self.args.open_loop_rate or self.loads["outage-none"].rps / 2
            lines = read_bodies(bodies)
            writer = watch_writer(url)
            self.loads["fail-fast"] = asyncio.run(open_loop(
                f"{url}/v1/claims", to_gateway(lines), rate, self.args.seconds))
            self.loads["fail-fast"].writer = writer()
            # its yardstick: the same loader at the same rate, the operator called directly
            # (~0.3 ms an answer), so that what the machine and the loader add shows apart
            self.loads["open-loop-direct"] = asyncio.run(open_loop(
                f"{self.stub_url}/claims", to_operator(lines), rate, self.args.seconds,
                name="d  the same, operator called directly"))
            if self.args.alone:
                self.loads["alone"] = asyncio.run(one_at_a_time(url, read_bodies(bodies),
                                                                self.args.alone))

    def ready(self, gateway: Served) -> None:
        """Its operator's breaker open, and the gateway warmed up."""
        url, keys, bodies, _proc = gateway
        open_breaker(url, keys, self.down_url)
        wrk("warm-up", url, bodies, 50, 2)

    def slices(self, gateways: dict[str, Served]) -> None:
        """--slices slices per gateway, --seconds in all per gateway, in ABBA order."""
        count = self.args.slices
        measured: dict[str, list[Load]] = {name: [] for name in gateways}
        for i in range(count):
            for name in (list(gateways) if i % 2 == 0 else list(gateways)[::-1]):
                url, _keys, bodies, proc = gateways[name]
                label, connections = LOADS[name]
                measured[name].append(wrk(label, url, bodies, connections,
                                          self.args.seconds / count, proc,
                                          database=f"{self.kind} {i + 1}"))
        for name, loads in measured.items():
            self.loads["sync" if name == "sync" else f"outage-{name}"] = combined(loads)
        plain = measured["none"]
        if "card" in measured:
            self.receipt_costs = [1 - card.rps / none.rps
                                  for none, card in zip(plain, measured["card"], strict=True)]
        if "sync" in measured:
            self.sync_ratios = [sent.rps / none.rps
                                for none, sent in zip(plain, measured["sync"], strict=True)]

    def drain(self, rate: float | None) -> None:
        per_s = rate or 1e6
        name = f"drain-{int(rate) if rate else 'max'}"
        fill_s = self.args.drain_seconds + 3
        with self.gateway(name, drain_per_s=per_s, drain_ramp_s=0) as (url, keys, bodies, proc):
            ops = {"Authorization": f"Bearer {keys['ops']}"}
            httpx.post(f"{url}/v1/operators/opera/pause", headers=ops, json={"reason": "bench"},
                       timeout=10).raise_for_status()
            outage = self.loads["outage-none"].rps
            target = 1.5 * (rate or outage) * fill_s  # the fill runs below outage speed
            queued = 0
            for _ in range(FILL_ROUNDS):  # until the window cannot empty the queue
                fill = wrk("fill", url, bodies, 50, max(1.0, (target - queued) / max(1.0, outage)))
                queued += fill.codes.get("202", 0)
                if queued >= target:
                    break
            if self.args.history:
                add_history(self.database_urls[name], self.args.history)
            httpx.post(f"{self.stub_url}/_ledger/reset", timeout=5).raise_for_status()
            httpx.post(f"{url}/v1/operators/opera/resume", headers=ops,
                       timeout=10).raise_for_status()
            cpu0 = cpu_seconds(proc)
            time.sleep(1.0)  # the first batch, and the leases of the next
            first, t0 = ledger(self.stub_url), time.perf_counter()
            profiler = profile(f"{self.kind}-{name}", proc, self.args.drain_seconds)
            writer = watch_writer(url)
            time.sleep(self.args.drain_seconds)
            last, t1 = ledger(self.stub_url), time.perf_counter()
            drained = writer()
            if profiler is not None:
                profiler.wait(timeout=60)
            sent = last["received"] - first["received"]
            load = Load(f"e drain {'unthrottled' if rate is None else f'at {rate:g}/s'}",
                        sent / (t1 - t0), float("nan"), float("nan"),
                        {"queued": queued, "sent in window": sent,
                         "sent twice": last["duplicates"]})
            load.cpu_ms = (cpu_seconds(proc) - cpu0) * 1000 / max(1, last["received"])
            load.writer = drained
            if last["received"] >= queued:
                self.notes.append(f"{name}: the queue emptied within the window: fill more")
            self.loads[name] = load

    def all(self, steps: set[str]) -> None:
        # every other figure is read against "outage-none"
        self.outages("receipt" in steps, "sync" in steps)
        if "drain" in steps:
            self.drain(None)
            for rate in self.args.drain_rates:
                self.drain(rate)


def add_history(url: str, count: int) -> None:
    """`count` claims accepted on earlier days, copied from a queued claim with one
    INSERT ... SELECT per 50,000 (the columns from the table itself, no outside input)."""
    database_url = make_url(url)
    if database_url.drivername.startswith("postgresql"):
        database_url = database_url.set(drivername="postgresql+psycopg")
        sequence = "SELECT generate_series(:start, :stop - 1) AS i"
        number, earlier = "lpad(seq.i::text, 9, '0')", "t.created_at - interval '1 day'"
    else:
        sequence = ("WITH RECURSIVE seq(i) AS (SELECT :start UNION ALL SELECT i + 1 FROM seq "
                    "WHERE i + 1 < :stop) SELECT i FROM seq")
        number, earlier = "printf('%09d', seq.i)", "t.created_at"
    engine = create_engine(database_url, connect_args={"timeout": 60}
                           if database_url.drivername == "sqlite" else {})
    overrides = {"id": f"'clm_0HIST' || {number}", "invoice_number": f"'H' || {number}",
                 "idempotency_key": "NULL", "status": "'accepted'", "queued_at": "NULL",
                 "next_attempt_at": "NULL", "lease_owner": "NULL", "lease_until": "NULL",
                 "created_at": earlier, "updated_at": earlier}
    with engine.begin() as connection:
        columns = [column["name"] for column in inspect(connection).get_columns("claims")]
        template = connection.execute(text("SELECT id FROM claims WHERE status = 'queued' "
                                           "LIMIT 1")).scalar_one()
    select = ", ".join(overrides.get(column, f"t.{column}") for column in columns)
    statement = text(f"INSERT INTO claims ({', '.join(columns)}) SELECT {select} "  # noqa: S608
                     f"FROM ({sequence}) AS seq, claims AS t WHERE t.id = :template")
    for start in range(0, count, 50_000):
        with engine.begin() as connection:
            connection.execute(statement, {"start": start, "stop": min(count, start + 50_000),
                                           "template": template})
    if engine.dialect.name == "postgresql":  # as autovacuum would, weeks later
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("VACUUM ANALYZE claims"))
    engine.dispose()


def combined(slices: list[Load]) -> Load:
    """Slices of one load as one: claims/s, p50 and the writer's figures their median, p99
    the worst, CPU per claim over all of them."""
    answered = [sum(load.codes.values()) for load in slices]
    codes: Counter[str] = Counter()
    for load in slices:
        codes.update(load.codes)
    cpu = sum(load.cpu_ms * n for load, n in zip(slices, answered, strict=True))
    writers = [load.writer for load in slices if load.writer is not None]
    return Load(slices[0].name, statistics.median(load.rps for load in slices),
                statistics.median(load.p50 for load in slices), max(load.p99 for load in slices),
                dict(codes), cpu / max(1, sum(answered)),
                Writer(statistics.median(writer.busy for writer in writers),
                       statistics.median(writer.per_group for writer in writers))
                if writers else None)


def open_breaker(url: str, keys: dict[str, str], stub_url: str) -> None:
    """The operator down, claims sent until the breaker is open (breaker_reset_s 600 keeps
    it open: no probe closes it during the measure)."""
    set_fault(stub_url, "down")
    headers = {"Authorization": f"Bearer {keys[DEMO_FINESS]}"}
    tag = secrets.token_hex(4)
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
        for i in range(200):
            if client.get("/v1/operators").json()[0]["state"] == "open":
                return
            client.post("/v1/claims", json={**claim_of(f"T{tag}-{i}", i)})
    raise SystemExit("the breaker did not open")


Request = tuple[str, dict[str, str]]  # a body and its headers


def to_gateway(lines: list[list[str]]) -> Callable[[int, str], Request]:
    """Claim i of the gateway's open loop: pharmacy key and body in turn."""
    def request(i: int, tag: str) -> Request:
        key, body = lines[i % len(lines)]
        return body.replace("INV-X", f"F{tag}-{i}", 1), {
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    return request


def to_operator(lines: list[list[str]]) -> Callable[[int, str], Request]:
    """Claim i sent to the stand-in operator directly, as the gateway would send it."""
    def request(i: int, tag: str) -> Request:
        _key, body = lines[i % len(lines)]
        return body, {"Idempotency-Key": f"F{tag}-{i}", "Content-Type": "application/json"}
    return request


async def open_loop(url: str, request: Callable[[int, str], Request], rate: float,
                    seconds: float, connections: int = 50,
                    name: str = "d fail-fast, open loop at {rate:.0f}/s") -> Load:
    """Claim i is due at i / rate s, whatever the earlier ones are doing, and its latency
    counts from then (no coordinated omission): `connections` clients, one connection
    each (opened first), take the due claims in turn; one due while all are busy waits,
    and that wait counts. aiohttp, not httpx: the loader shares the cores it measures,
    and httpx costs ~1 ms of CPU per request. `url` is where claims are POSTed."""
    tag, total = secrets.token_hex(4), round(rate * seconds)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    next_i = 0

    async def post(session: aiohttp.ClientSession, i: int) -> str:
        body, headers = request(i, tag)
        try:
            async with session.post(url, data=body, headers=headers) as answer:
                await answer.read()
                return str(answer.status)
        except aiohttp.ClientError as exc:
            return type(exc).__name__

    async def client(session: aiohttp.ClientSession, start: float) -> None:
        nonlocal next_i
        while next_i < total:
            i, next_i = next_i, next_i + 1
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            codes[await post(session, connections + i)] += 1
            latencies.append(time.perf_counter() - due)

    sessions = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                      timeout=aiohttp.ClientTimeout(total=10))
                for _ in range(connections)]
    try:
        await asyncio.gather(*(post(session, i) for i, session in enumerate(sessions)))
        start = time.perf_counter()
        await asyncio.gather(*(client(session, start) for session in sessions))
        elapsed = time.perf_counter() - start
    finally:
        for session in sessions:
            await session.close()
    latencies.sort()
    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return Load(name.format(rate=rate), len(latencies) / elapsed, pct(0.5), pct(0.99),
                dict(codes))


async def one_at_a_time(url: str, lines: list[list[str]], count: int = 300,
                        gap_s: float = 0.02) -> Load:
    """A claim, its answer, a pause, the next: what one claim costs in latency when no
    other waits with it (each write group holds one claim and pays all its round trips)."""
    tag = secrets.token_hex(4)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    started = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for i in range(count):
            key, body = lines[i % len(lines)]
            sent = time.perf_counter()
            async with session.post(f"{url}/v1/claims", data=body.replace(
                    "INV-X", f"A{tag}-{i}", 1), headers={
                    "Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                    ) as answer:
                await answer.read()
                codes[str(answer.status)] += 1
            latencies.append(time.perf_counter() - sent)
            await asyncio.sleep(gap_s)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Load(f"d one claim at a time, {gap_s * 1000:.0f} ms apart", count / elapsed,
                latencies[count // 2] * 1000, latencies[min(count - 1, count * 99 // 100)] * 1000,
                dict(codes))


def read_bodies(bodies: Path) -> list[list[str]]:
    return [line.split("\t", 1) for line in bodies.read_text().splitlines()]


def ledger(stub_url: str) -> dict[str, int]:
    return httpx.get(f"{stub_url}/_ledger", timeout=5).json()


def yardstick(stub_url: str, tmp: Path, seconds: float) -> Load:
    bodies = tmp / "direct.tsv"
    bodies.write_text("".join(f"\t{json.dumps(claim_of('INV-X', b), separators=(',', ':'))}\n"
                              for b in range(BENEFICIARIES)))
    load = wrk("a the operator called directly", stub_url, bodies, 16, seconds, path="/claims")
    httpx.post(f"{stub_url}/_ledger/reset", timeout=5)
    return load


def verdicts(run: Run) -> list[str]:
    """Each figure against its target, for the steps that ran."""
    loads = run.loads
    outage = loads["outage-none"].rps
    lines = [f"fail-fast open loop p99 {loads['fail-fast'].p99:.1f} ms (target < 20); the "
             f"same loader against the operator directly: p99 "
             f"{loads['open-loop-direct'].p99:.1f} ms"]
    if "sync" in loads:
        ratios = ", ".join(f"x{ratio:.2f}" for ratio in run.sync_ratios)
        lines.append(f"synchronous / outage throughput: x{loads['sync'].rps / outage:.2f} "
                     f"(target >= 0.70; slice by slice {ratios}); p50 "
                     f"{loads['sync'].p50:.1f} ms (target <= 25)")
    if "outage-card" in loads:
        pairs = ", ".join(f"{cost:.1%}" for cost in run.receipt_costs)
        lines.append(f"signed receipt costs {1 - loads['outage-card'].rps / outage:.1%} of "
                     f"outage throughput (target < 15 %); slice by slice {pairs}")
    if "drain-max" in loads:
        lines.append(f"drain unthrottled / outage throughput: "
                     f"x{loads['drain-max'].rps / outage:.2f} (target >= 0.80)")
        for rate in run.args.drain_rates:
            got = loads[f"drain-{rate}"].rps
            lines.append(f"drain at {rate}/s: {got:.0f}/s ({got / rate - 1:+.1%}; "
                         "target within 10 %)")
        twice = sum(load.codes.get("sent twice", 0) for name, load in loads.items()
                    if name.startswith("drain"))
        lines.append(f"claims the operator received twice: {twice} (must be 0)")
    return lines + run.notes


def report(yard: Load, runs: list[Run]) -> None:
    print(machine())
    print(f"load generator: {'wrk ' + WRK if WRK else 'the Python loader (no wrk found)'}")
    print(f"\n{'':<40}{'claims/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'cpu ms':>7}"
          f"{'writer':>13}  answers")
    print(yard.line())
    for run in runs:
        print(f"-- {run.kind} ({run.args.pharmacies} pharmacies)")
        for load in run.loads.values():
            print(load.line())
        for line in verdicts(run):
            print(f"   {line}")
    by_kind = {run.kind: run.loads for run in runs}
    if {"sqlite", "postgres"} <= by_kind.keys():  # whatever order --databases named them
        sqlite, postgres = by_kind["sqlite"], by_kind["postgres"]
        print("\nPostgreSQL / SQLite (target >= 0.5 each):")
        for name, load in postgres.items():
            if name == "alone":  # its rate is the pause's: the latency compares
                print(f"   {name:<14} p50 x{sqlite[name].p50 / load.p50:.2f} "
                      "(SQLite's latency / PostgreSQL's)")
            elif name in sqlite and name != "open-loop-direct":  # a yardstick
                print(f"   {name:<14} x{load.rps / sqlite[name].rps:.2f}")


def start_stub(procs: Procs, name: str) -> str:
    """A stand-in operator (stopped with `procs`); its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = procs.tmp / f"{name}.log"
    with log.open("ab") as out:
        stub = subprocess.Popen([sys.executable, str(HERE / "stub_operator.py"),  # noqa: S603
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    procs.running.append(stub)
    wait_ready(f"{url}/health", stub, log)
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per load")
    parser.add_argument("--drain-seconds", type=float, default=6.0,
                        help="measured seconds per drain rate")
    parser.add_argument("--drain-rates", default=",".join(map(str, DRAIN_RATES)),
                        type=lambda text: [int(rate) for rate in text.split(",") if rate],
                        help="drain_per_s values measured after the unthrottled drain")
    parser.add_argument("--history", type=int, default=0,
                        help="claims already accepted in each drain's database (copies of "
                             "a queued one, inserted before the drain)")
    parser.add_argument("--pharmacies", type=int, default=16, help="pharmacies (keys) in turn")
    parser.add_argument("--open-loop-rate", type=float, default=None,
                        help="the fail-fast open loop's claims/s (default: half the outage "
                             "throughput measured just before; a fixed rate compares builds)")
    parser.add_argument("--alone", type=int, default=300,
                        help="claims sent one at a time after the open loop (0: none)")
    parser.add_argument("--slices", type=int, default=2,
                        help="outage mode measured in this many slices per gateway, the "
                             "gateways with and without a receipt in turn (ABBA)")
    parser.add_argument("--steps", default="receipt,sync,drain",
                        help="besides the outage mode: any of receipt, sync, drain")
    parser.add_argument("--databases", default="sqlite,postgres",
                        help="sqlite and/or postgres (postgres only with BENCH_POSTGRES_URL)")
    parser.add_argument("--all", action="store_true",
                        help="then run bench/board_at_scale.py and bench/workers.py")
    args = parser.parse_args()
    kinds = [kind for kind in args.databases.split(",")
             if kind == "sqlite" or (kind == "postgres" and os.environ.get("BENCH_POSTGRES_URL"))]
    steps = set(args.steps.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-costs-") as tmp_name, \
            Procs(Path(tmp_name)) as procs:
        stub_url, down_url = start_stub(procs, "stub"), start_stub(procs, "stub-down")
        yard = yardstick(stub_url, procs.tmp, args.seconds)
        runs = []
        for kind in kinds:
            run = Run(kind, procs, stub_url, args, down_url)
            run.all(steps)
            runs.append(run)
    report(yard, runs)
    if args.all:
        for script in ("board_at_scale.py", "workers.py"):
            print(f"\n== bench/{script}", flush=True)
            subprocess.run([sys.executable, str(HERE / script)], check=False)  # noqa: S603


if __name__ == "__main__":
    main()
