"""Benchmark the gateway's synchronous claim path against a baseline, in one run.

Measures, side by side on the same machine and in the same run:
  (a) baseline: POST /claims straight to a simulated operator (`gateway simulator`);
  (b) gateway:  POST /v1/claims to `gateway serve` (SQLite), which forwards each claim
      to that same simulator and answers 201 once the operator has answered;
  (c) optional: the same gateway on PostgreSQL (GATEWAY_TEST_POSTGRES_URL, and only if
      BENCH_POSTGRES=1, since a shared database is never cleaned).
Comparing against a baseline measured in the same run tells what the gateway itself
costs (validation, storage, encryption, audit) apart from the machine's speed and the
operator's. Everything listens on 127.0.0.1; subprocesses are killed on exit.
Run: .venv/bin/python bench/sync_path.py [--requests N] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway.demo import DEMO_FINESS, sample_claim

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = str(Path(sys.executable).with_name("gateway"))
READY_TIMEOUT_S = 30.0
WARMUP = 20
Send = Callable[[httpx.AsyncClient, int], Awaitable[int]]


@dataclass
class Result:
    name: str
    expected: int
    latencies: list[float] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000 if xs else float("nan")

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else float("nan")

    @property
    def errors(self) -> int:
        return sum(n for code, n in self.codes.items() if code != str(self.expected))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([GATEWAY, *args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)  # noqa: S603


def stop(proc: subprocess.Popen[bytes]) -> None:
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


def write_config(tmp: Path, name: str, db_url: str, sim_port: int, port: int) -> Path:
    path = tmp / f"{name}.toml"
    path.write_text(f"""environment = "development"
database_url = "{db_url}"
public_url = "http://127.0.0.1:{port}"
data_dir = "{tmp}"

[limits]
claims_per_minute = 100000000

[[operators]]
name = "opera"
adapter = "reference"
base_url = "http://127.0.0.1:{sim_port}"
insurers = ["80*"]
""")
    return path


def create_key(config: Path) -> str:
    out = subprocess.run(  # noqa: S603
        [GATEWAY, "keys", "create", "--config", str(config), "--role", "pharmacy",
         "--finess", DEMO_FINESS], capture_output=True, text=True, check=True, timeout=60, cwd=ROOT)
    return out.stdout.strip().splitlines()[-1]


async def load(res: Result, base_url: str, headers: dict[str, str], send: Send,
               n: int, c: int, cap_s: float) -> Result:
    """WARMUP unmeasured requests, then n requests over c workers, stopped at cap_s."""
    next_i = 0

    async def worker(measure: bool, count: int, deadline: float) -> None:
        nonlocal next_i
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10.0) as client:
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

    await asyncio.gather(*(worker(False, WARMUP, time.monotonic() + cap_s) for _ in range(c)))
    next_i, t0 = WARMUP, time.perf_counter()  # indices go on: no invoice is sent twice
    await asyncio.gather(*(worker(True, WARMUP + n, time.monotonic() + cap_s) for _ in range(c)))
    res.elapsed = time.perf_counter() - t0
    return res


async def bench_simulator(url: str, args: argparse.Namespace) -> Result:
    tag = secrets.token_hex(4)

    async def send(client: httpx.AsyncClient, i: int) -> int:
        claim_id = f"clm_{uuid.uuid4().hex}"
        body = {**sample_claim(f"B{tag}-{i}"), "claim_id": claim_id}
        return (await client.post("/claims", json=body,
                                  headers={"Idempotency-Key": claim_id})).status_code

    return await load(Result("a simulator (baseline)", 200), url, {}, send,
                      args.requests, args.concurrency, args.max_seconds)


async def bench_gateway(name: str, url: str, key: str, args: argparse.Namespace) -> Result:
    tag = secrets.token_hex(4)  # fresh per run: a shared database may hold older claims

    async def send(client: httpx.AsyncClient, i: int) -> int:
        return (await client.post("/v1/claims", json=sample_claim(f"B{tag}-{i}"))).status_code

    return await load(Result(name, 201), url, {"Authorization": f"Bearer {key}"}, send,
                      args.requests, args.concurrency, args.max_seconds)


def report(results: list[Result], args: argparse.Namespace) -> None:
    print(f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
          f"({platform.platform()})")
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(f"\n{'path':<26}{'requests':>9}{'conc':>6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'errors':>8}  codes")
    for r in results:
        codes = ", ".join(f"{k}:{v}" for k, v in sorted(r.codes.items()))
        codes += "  (stopped by --max-seconds)" if len(r.latencies) < args.requests else ""
        print(f"{r.name:<26}{len(r.latencies):>9}{args.concurrency:>6}{r.rps:>9.1f}"
              f"{r.pct(0.5):>9.1f}{r.pct(0.99):>9.1f}{r.errors:>8}  {codes}")
    base = results[0]
    for r in results[1:]:
        print(f"\n{r.name} / baseline: req/s x{r.rps / base.rps:.2f}, "
              f"p50 x{r.pct(0.5) / base.pct(0.5):.2f}, p99 x{r.pct(0.99) / base.pct(0.99):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="measured requests per path")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent client workers")
    parser.add_argument("--max-seconds", type=float, default=45.0, help="wall-clock cap per loop")
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            sim_port = free_port()
            procs.append(start(["simulator", "--port", str(sim_port), "--name", "opera"],
                               tmp / "sim.log"))
            wait_ready(f"http://127.0.0.1:{sim_port}/health", procs[-1], tmp / "sim.log")
            targets = [("b gateway sqlite", f"sqlite:///{tmp / 'gateway.db'}")]
            pg_url = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")
            if pg_url and os.environ.get("BENCH_POSTGRES") == "1":
                targets.append(("c gateway postgres", pg_url))
            results = [asyncio.run(bench_simulator(f"http://127.0.0.1:{sim_port}", args))]
            for name, db_url in targets:
                port, log = free_port(), tmp / f"{name.split()[-1]}.log"
                config = write_config(tmp, name.split()[-1], db_url, sim_port, port)
                key = create_key(config)
                procs.append(start(["serve", "--config", str(config), "--port", str(port)], log))
                wait_ready(f"http://127.0.0.1:{port}/healthz", procs[-1], log)
                results.append(asyncio.run(
                    bench_gateway(name, f"http://127.0.0.1:{port}", key, args)))
                stop(procs.pop())  # one gateway at a time: they share 2 cores
        finally:
            for proc in procs:
                stop(proc)
    report(results, args)


if __name__ == "__main__":
    main()
