"""Shared pieces of the benchmarks: subprocesses, config, keys, a bounded load loop.

Everything listens on 127.0.0.1 on free ports; every process started through `Procs`
is stopped when its `with` block ends, whatever happens.
"""

from __future__ import annotations

import asyncio
import os
import platform
import secrets
import shlex
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from gateway.demo.samples import DEMO_FINESS, sample_claim

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = str(Path(sys.executable).with_name("gateway"))
READY_TIMEOUT_S = 120.0  # a gateway migrating a new database, on cores shared with a test run
WARMUP = 20
UNLIMITED = 100_000_000  # [limits] claims_per_minute high enough never to answer 429
Send = Callable[[httpx.AsyncClient, int], Awaitable[int]]


@dataclass
class Result:
    name: str
    expected: int
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    usage: dict[str, float] = field(default_factory=dict)  # per-claim figures a bench adds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else float("nan")

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.codes.items() if code != str(self.expected))

    def codes_text(self) -> str:
        return ", ".join(f"{k}:{v}" for k, v in sorted(self.codes.items()))


LOAD_AT_START = os.getloadavg()[0]


def machine(load: bool = True) -> str:
    """The lines every benchmark prints: the machine, the exact command and (`load`) the
    1-minute load average when the benchmark started and now: other work on the machine
    shows there."""
    text = (f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
            f"({platform.platform()})\ncommand: {shlex.join(sys.orig_argv)}")
    if load:
        text += (f"\nload average (1 min): {LOAD_AT_START:.2f} at start, "
                 f"{os.getloadavg()[0]:.2f} now")
    return text


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """User + system CPU time a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bytes_written(proc: subprocess.Popen[bytes]) -> int:
    """Bytes a running process has caused to be written to storage so far (Linux
    /proc/PID/io write_bytes: the WAL, checkpoints, logs)."""
    for line in Path(f"/proc/{proc.pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise LookupError("no write_bytes in /proc/PID/io")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([GATEWAY, *args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)  # noqa: S603


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise SystemExit(f"not ready: {url}\n{log.read_text()[-2000:]}")


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return f'"{value}"'


def write_config(tmp: Path, name: str, db_url: str, sim_port: int, port: int, *,
                 claims_per_minute: int = UNLIMITED,
                 operator: Mapping[str, object] | None = None,
                 sections: Mapping[str, Mapping[str, object]] | None = None) -> Path:
    """A gateway config with one operator "opera" (insurers 80*) at the simulator's port;
    `operator` adds or overrides that operator's keys, `sections` adds top-level tables
    such as {"provisional": {...}} (CONTRACT.md section 2)."""
    extra = "".join(f"{key} = {_toml(value)}\n" for key, value in (operator or {}).items())
    tables = "".join(
        f"\n[{name}]\n" + "".join(f"{key} = {_toml(value)}\n" for key, value in keys.items())
        for name, keys in (sections or {}).items())
    path = tmp / f"{name}.toml"
    path.write_text(f"""environment = "development"
database_url = "{db_url}"
public_url = "http://127.0.0.1:{port}"
data_dir = "{tmp}"

[limits]
claims_per_minute = {claims_per_minute}
{tables}
[[operators]]
name = "opera"
adapter = "reference"
base_url = "http://127.0.0.1:{sim_port}"
insurers = ["80*"]
{extra}""")
    return path


def create_key(config: Path, role: str = "pharmacy") -> str:
    scope = ["--finess", DEMO_FINESS] if role == "pharmacy" else []
    out = subprocess.run(  # noqa: S603
        [GATEWAY, "keys", "create", "--config", str(config), "--role", role, *scope],
        capture_output=True, text=True, check=True, timeout=60, cwd=ROOT)
    return out.stdout.strip().splitlines()[-1]


def person(i: int) -> dict[str, object]:
    """Synthetic beneficiary number i (0 to 998,000): born 14 July 1985 in Paris, with a
    valid NIR key (97 - N mod 97); nobody real."""
    commune, order = divmod(i % 998_001, 999)
    first13 = f"1850775{commune + 1:03d}{order + 1:03d}"
    return {"nir": f"{first13}{97 - int(first13) % 97:02d}", "birth_date": "1985-07-14",
            "birth_rank": 1, "last_name": "Martin", "first_name": "Claire"}


def claim_of(invoice_number: str, beneficiary: int) -> dict[str, object]:
    """`sample_claim` for synthetic beneficiary number `beneficiary` (see `person`)."""
    return {**sample_claim(invoice_number), "beneficiary": person(beneficiary)}


class Procs:
    """Subprocesses started for one benchmark; all stopped on leaving the `with` block."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[subprocess.Popen[bytes]] = []
        self.by_url: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for proc in reversed(self.running):
            stop(proc)
        self.running.clear()

    def start(self, args: list[str], log_name: str, ready_url: str) -> subprocess.Popen[bytes]:
        log = self.tmp / log_name
        proc = start(args, log)
        self.running.append(proc)
        wait_ready(ready_url, proc, log)
        return proc

    def stop(self, proc: subprocess.Popen[bytes] | str) -> None:
        """Stop a process started here, given as itself or by its base URL."""
        if isinstance(proc, str):
            proc = self.by_url.pop(proc)
        stop(proc)
        if proc in self.running:
            self.running.remove(proc)

    def simulator(self, name: str = "opera") -> str:
        """Start `gateway simulator`; its base URL."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.by_url[url] = self.start(["simulator", "--port", str(port), "--name", name],
                                      f"sim-{port}.log", f"{url}/health")
        return url

    def gateway(self, config: Path, port: int) -> tuple[str, subprocess.Popen[bytes]]:
        """Start `gateway serve` on `port` (the one written in `config`)."""
        url = f"http://127.0.0.1:{port}"
        proc = self.start(["serve", "--config", str(config), "--port", str(port)],
                          f"gateway-{port}.log", f"{url}/healthz")
        self.by_url[url] = proc
        return url, proc


@contextmanager
def stub_operator() -> Iterator[str]:
    """bench/stub_operator.py in a process of its own: its URL, once it answers."""
    port = free_port()
    stub = subprocess.Popen([sys.executable, str(Path(__file__).with_name("stub_operator.py")),  # noqa: S603
                             "--port", str(port)], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(f"{url}/health", timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        stub.kill()
        stub.wait()


@contextmanager
def postgres_database(server: str, prefix: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server at `server` (a URL), dropped on exit."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = make_url(server).set(drivername="postgresql+psycopg")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


async def gateway_in_process(stack: AsyncExitStack, folder: Path, operator: dict[str, Any],
                             finesses: list[str], caps: dict[str, int],
                             database_url: str | None = None) -> tuple[Any, list[Any]]:
    """A gateway built as `gateway serve` builds it (`create_app`, no background workers),
    on `database_url` (migrated first; by default a fresh SQLite file in `folder`), with
    `operator` its one operator and `caps` its receipt limits, its lifespan held by
    `stack`: its context, and a principal per pharmacy of `finesses` (an API key each),
    for calling its services without HTTP."""
    from asgi_lifespan import LifespanManager

    from gateway.keys.admin import create_key
    from gateway.main import create_app
    from gateway.security.apikeys import authenticate
    from gateway.settings import Settings
    from gateway.storage.migrate import upgrade

    url = database_url or f"sqlite:///{folder}.db"
    upgrade(url)
    settings = Settings(environment="development", database_url=url, data_dir=folder,
                        provisional=caps, operators=[operator])
    app = create_app(settings, configure_logs=False, run_workers=False)
    await stack.enter_async_context(LifespanManager(app))
    context = app.state.context
    principals = []
    for finess in finesses:
        _, secret = create_key(settings, role="pharmacy", finess=finess)
        principals.append(await context.db.read_connection(
            lambda connection, secret=secret: authenticate(connection, secret,
                                                           context.credentials)))
    return context, principals


async def submit_in_process(context: Any, principals: list[Any], finesses: list[str], *,
                            mode: str, tag: str, claims: int, concurrency: int,
                            beneficiaries: int) -> None:
    """`claims` claims to a gateway of `gateway_in_process`, `concurrency` at a time, in
    turn from each pharmacy of `finesses` and of `beneficiaries` people; each must be
    answered as its mode should be (201 "sent", else 202 queued), or the run stops."""
    from gateway.claims import service
    from gateway.claims.schemas import ClaimCreate

    expected = 201 if mode == "sent" else 202

    async def client(first: int) -> None:
        for i in range(first, claims, concurrency):
            body = claim_of(f"{tag}-{i}", i % beneficiaries)
            body["dispenser"] = {"finess": finesses[i % len(finesses)]}
            result = await service.submit(
                ctx=context, principal=principals[i % len(principals)],
                claim_in=ClaimCreate.model_validate(body), idempotency_key=None)
            if result.http_status != expected:
                raise SystemExit(f"{mode}: a claim answered {result.http_status}")

    await asyncio.gather(*(client(c) for c in range(concurrency)))


def set_fault(sim_url: str, mode: str) -> None:
    httpx.post(f"{sim_url}/_faults", json={"mode": mode}, timeout=5.0).raise_for_status()


def operator_board(url: str, key: str, name: str = "opera",
                   timeout: float = 5.0) -> dict[str, Any]:
    """The operator's row of GET /v1/operators."""
    answer = httpx.get(f"{url}/v1/operators", headers={"Authorization": f"Bearer {key}"},
                       timeout=timeout)
    answer.raise_for_status()
    return next(row for row in answer.json() if row["name"] == name)


async def trip_breaker(url: str, key: str, sim_url: str, tag: str, cap_s: float = 60.0) -> float:
    """Put the simulator `down` and submit claims until the breaker is open; seconds taken."""
    set_fault(sim_url, "down")
    t0 = time.monotonic()
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as client:
        i = 0
        while time.monotonic() - t0 < cap_s:
            state = (await client.get("/v1/operators")).json()[0]["state"]
            if state == "open":
                return time.monotonic() - t0
            await asyncio.gather(*(client.post("/v1/claims", json=sample_claim(f"T{tag}-{i + j}"))
                                   for j in range(3)))
            i += 3
    raise SystemExit(f"the breaker did not open within {cap_s} s")


async def load(res: Result, base_url: str, headers: dict[str, str], send: Send,
               n: int, c: int, cap_s: float, warmup: int | None = None) -> Result:
    """`warmup` unmeasured requests (default: WARMUP, and at least 2 per worker so that
    every connection is open), then n requests over c workers, stopped at cap_s. Each
    worker keeps its client (and connection) from the warm-up into the measure, so no
    measured request pays for a TCP connection."""
    warmup = max(WARMUP, 2 * c) if warmup is None else warmup
    next_i = 0

    async def worker(client: httpx.AsyncClient, measure: bool, count: int,
                     deadline: float) -> None:
        nonlocal next_i
        while next_i < count and time.monotonic() < deadline:
            i, next_i = next_i, next_i + 1
            t0 = time.perf_counter()
            try:
                code = str(await send(client, i))
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            if measure:
                res.latencies.append(time.perf_counter() - t0)
                res.codes[code] += 1

    clients = [httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10.0)
               for _ in range(c)]
    try:
        await asyncio.gather(*(worker(client, False, warmup, time.monotonic() + cap_s)
                               for client in clients))
        next_i, t0 = warmup, time.perf_counter()  # indices go on: no invoice is sent twice
        await asyncio.gather(*(worker(client, True, warmup + n, time.monotonic() + cap_s)
                               for client in clients))
        res.elapsed = time.perf_counter() - t0
    finally:
        for client in clients:
            await client.aclose()
    return res


async def healthz_load(name: str, url: str, n: int, c: int, cap_s: float) -> Result:
    """The baseline: GET /healthz (no database, no operator) at the same concurrency."""
    async def send(client: httpx.AsyncClient, i: int) -> int:
        return (await client.get("/healthz")).status_code

    return await load(Result(name, 200), url, {}, send, n, c, cap_s)


async def claims_load(name: str, url: str, key: str, n: int, c: int, cap_s: float,
                      expected: int = 202) -> Result:
    """POST /v1/claims with fresh invoice numbers."""
    tag = secrets.token_hex(4)

    async def send(client: httpx.AsyncClient, i: int) -> int:
        return (await client.post("/v1/claims", json=sample_claim(f"Q{tag}-{i}"))).status_code

    return await load(Result(name, expected), url, {"Authorization": f"Bearer {key}"}, send,
                      n, c, cap_s)


async def paced_load(res: Result, base_url: str, headers: dict[str, str], send: Send,
                     rate: float, n: int, cap_s: float, connections: int = 50) -> Result:
    """Open loop: request i is due at i / rate s whatever the earlier ones are doing, and
    its latency counts from that instant (no coordinated omission). `connections`
    clients, each with its own connection (opened first), take the due requests in
    turn: a request due while every client is busy waits for one, and that wait counts."""
    next_i = 0
    clients = [httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10.0)
               for _ in range(connections)]

    async def worker(client: httpx.AsyncClient, start: float) -> None:
        nonlocal next_i
        while next_i < n:
            i, next_i = next_i, next_i + 1
            due = start + i / rate
            if due - start > cap_s:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            try:
                code = str(await send(client, connections + i))
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            res.latencies.append(time.perf_counter() - due)
            res.codes[code] += 1

    try:
        await asyncio.gather(*(send(client, i) for i, client in enumerate(clients)))
        start = time.perf_counter()
        await asyncio.gather(*(worker(client, start) for client in clients))
        res.elapsed = time.perf_counter() - start
    finally:
        for client in clients:
            await client.aclose()
    return res
