"""What one call to an operator costs the gateway's event loop: CPU per call, in process.

The synchronous path and the drain both pay it on every claim sent, on the thread that
also serves every pharmacy. Three ways of making the same call (the reference protocol's
`POST /claims`, a claim of two lines, JSON answer parsed) against the stand-in operator
(bench/stub_operator.py, another process), with `--concurrency` calls in flight:
  a. aiohttp alone: a session's POST, the answer read and parsed. The floor of a Python
     HTTP client here, the yardstick;
  b. the reference adapter over `httpx.AsyncClient` on the aiohttp transport, under the
     guard: as the gateway called operators before `OperatorClient`;
  c. the reference adapter over `OperatorClient`, under the guard (breaker, deadline,
     retries), as the gateway calls operators now.
CPU is this process's (`time.process_time`), per call, median of --rounds interleaved
rounds: the operator's own CPU is not counted. Everything listens on 127.0.0.1.
Run: .venv/bin/python bench/operator_call.py [--calls N] [--concurrency C] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
from harness import machine, stub_operator

from adapters.base import OperatorClaim
from adapters.reference import ReferenceAdapter
from adapters.transport import AiohttpTransport, OperatorClient
from gateway.resilience.breaker import OperatorBreaker
from gateway.resilience.guard import Guard

HERE = Path(__file__).resolve().parent
TIMEOUT_S = 2.0
BODY = {"finess": "330000001", "invoice_number": "INV-1", "service_date": "2026-11-28",
        "amc": {"insurer_number": "801234567", "member_number": "A1"},
        "lines": [{"code": "PH7", "base_cents": 1000, "amo_cents": 650, "amc_cents": 350},
                  {"code": "PH4", "base_cents": 500, "amo_cents": 150, "amc_cents": 350}]}
Call = Callable[[str], Awaitable[object]]


async def cpu_per_call(make: Callable[[str], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]],
                       url: str, calls: int, concurrency: int) -> float:
    """Microseconds of this process's CPU per call, after a warm-up of `concurrency` calls."""
    call, close = await make(url)
    run = secrets.token_hex(4)
    keys = iter(range(calls))

    async def worker(prefix: str, count: int | None) -> None:
        for i in (range(count) if count is not None else keys):
            await call(f"clm_{run}_{prefix}{i}")

    await asyncio.gather(*(worker(f"w{n}_", 4) for n in range(concurrency)))
    started = time.process_time()
    await asyncio.gather(*(worker("", None) for _ in range(concurrency)))
    spent = time.process_time() - started
    await close()
    return spent / calls * 1e6


async def aiohttp_alone(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(base_url=url)
    timeout = aiohttp.ClientTimeout(sock_connect=TIMEOUT_S, sock_read=TIMEOUT_S)

    async def call(key: str) -> object:
        async with session.post("/claims", data=json.dumps({**BODY, "claim_id": key}),
                                headers={"Content-Type": "application/json",
                                         "Idempotency-Key": key}, timeout=timeout) as answer:
            return json.loads(await answer.read())

    return call, session.close


def adapter_over(client_class: type[httpx.AsyncClient]) -> Callable[
        [str], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]]:
    async def make(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
        client = client_class(base_url=url, transport=AiohttpTransport(),
                              timeout=httpx.Timeout(TIMEOUT_S))
        adapter = ReferenceAdapter("opera", client, TIMEOUT_S)
        guard = Guard(OperatorBreaker("opera", fail_max=5, reset_s=30, reset_max_s=60),
                      timeout_s=TIMEOUT_S, deadline_s=2 * TIMEOUT_S)

        async def call(key: str) -> object:
            claim = OperatorClaim(idempotency_key=key, body={**BODY, "claim_id": key})
            return await guard.call(lambda: adapter.submit_claim(claim))

        return call, client.aclose

    return make


WAYS = {
    "a aiohttp alone (yardstick)": aiohttp_alone,
    "b adapter over httpx.AsyncClient, guarded": adapter_over(httpx.AsyncClient),
    "c adapter over OperatorClient, guarded (now)": adapter_over(OperatorClient),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="measured calls per round")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per way")
    args = parser.parse_args()
    print(machine())
    with stub_operator() as url:
        spent: dict[str, list[float]] = {name: [] for name in WAYS}
        for _ in range(args.rounds):
            for name, make in WAYS.items():
                spent[name].append(asyncio.run(cpu_per_call(make, url, args.calls,
                                                            args.concurrency)))
    print(f"\n{args.calls} calls per round, {args.concurrency} in flight, {args.rounds} rounds"
          "\n\n                                              CPU us/call (median)   rounds")
    floor = statistics.median(spent["a aiohttp alone (yardstick)"])
    for name, values in spent.items():
        print(f"{name:<46}{statistics.median(values):>10.0f}   "
              f"{', '.join(f'{v:.0f}' for v in values)}")
    for name, values in list(spent.items())[1:]:
        print(f"   {name.split(' (')[0][2:]} / aiohttp alone: "
              f"x{statistics.median(values) / floor:.2f}")


if __name__ == "__main__":
    main()
