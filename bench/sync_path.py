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
import secrets
import tempfile
import uuid
from pathlib import Path

import httpx
from harness import (
    Procs,
    Result,
    create_key,
    free_port,
    load,
    machine,
    sample_claim,
    write_config,
)


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
    print(machine(load=False))
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
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp_name, \
            Procs(Path(tmp_name)) as procs:
        tmp = procs.tmp
        sim_url = procs.simulator("opera")
        sim_port = int(sim_url.rsplit(":", 1)[1])
        targets = [("b gateway sqlite", f"sqlite:///{tmp / 'gateway.db'}")]
        pg_url = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")
        if pg_url and os.environ.get("BENCH_POSTGRES") == "1":
            targets.append(("c gateway postgres", pg_url))
        results = [asyncio.run(bench_simulator(sim_url, args))]
        for name, db_url in targets:
            port = free_port()
            config = write_config(tmp, name.split()[-1], db_url, sim_port, port)
            key = create_key(config)
            url, proc = procs.gateway(config, port)
            results.append(asyncio.run(bench_gateway(name, url, key, args)))
            procs.stop(proc)  # one gateway at a time: they share 2 cores
    report(results, args)


if __name__ == "__main__":
    main()
