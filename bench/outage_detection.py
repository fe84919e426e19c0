"""How long until the gateway sees an operator hang: breaker "open" on GET /v1/operators.

The operator's settings are the defaults of CONTRACT.md section 2 (timeout_s 2,
deadline_s 3, breaker_fail_max 5, breaker_reset_s 15, probe_interval_s 5). Each run
starts a fresh `gateway serve` (fresh SQLite database, breaker closed, no earlier trip)
in front of one `gateway simulator`, waits a random 0..probe_interval_s so that the
hang falls anywhere in the prober's cycle, then POSTs /_faults {"mode": "hang"} and
polls GET /v1/operators every 50 ms until the operator's state is "open":
  (a) with pharmacy traffic: claims at --rate per second (open loop: each claim is sent
      on schedule whether or not the earlier ones were answered), from 2 s before the
      hang until the breaker opens;
  (b) without traffic: the active health probe alone.
Each case runs --runs times (3). Reported per run: seconds from the hang (the moment
/_faults answered) to the first poll that saw "open", and to the breaker's own
`state_since`. Targets: (a) under 2 x deadline_s = 6 s, (b) under 10 s.
Everything listens on 127.0.0.1; subprocesses are killed on exit.
Run: .venv/bin/python bench/outage_detection.py [--runs N] [--rate R]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from harness import (
    Procs,
    create_key,
    free_port,
    machine,
    median,
    sample_claim,
    set_fault,
    write_config,
)

POLL_S = 0.05
WARM_S = 2.0
PROBE_INTERVAL_S = 5.0
DEADLINE_S = 3.0
TARGETS = {"a": 2 * DEADLINE_S, "b": 10.0}


@dataclass
class Run:
    case: str
    offset_s: float  # random wait before the hang
    polled_s: float = float("nan")
    since_s: float = float("nan")
    claims_sent: int = 0
    codes: Counter[str] = field(default_factory=Counter)


async def paced_claims(url: str, key: str, rate: float, stop: asyncio.Event, run: Run,
                       cap_s: float) -> None:
    """Open-loop traffic: one claim every 1/rate s until `stop` (or cap_s), then cancel."""
    tag = secrets.token_hex(4)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=10.0, limits=limits) as client:
        async def one(i: int) -> None:
            try:
                answer = await client.post("/v1/claims", json=sample_claim(f"D{tag}-{i}"))
                run.codes[str(answer.status_code)] += 1
            except httpx.HTTPError as exc:
                run.codes[type(exc).__name__] += 1

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        while not stop.is_set() and time.monotonic() - start < cap_s:
            tasks.append(asyncio.create_task(one(len(tasks))))
            next_at = start + len(tasks) / rate
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            except TimeoutError:
                pass
        run.claims_sent = len(tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def measure(url: str, sim_url: str, key: str, run: Run, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    traffic = None
    if run.case == "a":
        traffic = asyncio.create_task(paced_claims(url, key, args.rate, stop, run,
                                                   cap_s=WARM_S + run.offset_s + args.cap))
        await asyncio.sleep(WARM_S)
    await asyncio.sleep(run.offset_s)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5.0) as client:
            answer = await client.get("/v1/operators")
            assert answer.json()[0]["state"] == "closed", answer.text
            async with httpx.AsyncClient(timeout=5.0) as sim:
                (await sim.post(f"{sim_url}/_faults", json={"mode": "hang"})).raise_for_status()
            t0, wall0 = time.monotonic(), time.time()
            while (elapsed := time.monotonic() - t0) < args.cap:
                row = (await client.get("/v1/operators")).json()[0]
                if row["state"] == "open":
                    run.polled_s = time.monotonic() - t0
                    run.since_s = datetime.fromisoformat(row["state_since"]).timestamp() - wall0
                    break
                await asyncio.sleep(max(0.0, POLL_S - (time.monotonic() - t0 - elapsed)))
    finally:
        stop.set()
        if traffic is not None:
            await traffic


def one_run(procs: Procs, sim_url: str, run: Run, args: argparse.Namespace) -> None:
    set_fault(sim_url, "ok")
    port = free_port()
    name = f"detect-{secrets.token_hex(3)}"
    config = write_config(procs.tmp, name, f"sqlite:///{procs.tmp / (name + '.db')}",
                          int(sim_url.rsplit(":", 1)[1]), port)
    key = create_key(config)
    url, gateway = procs.gateway(config, port)
    try:
        asyncio.run(measure(url, sim_url, key, run, args))
    finally:
        procs.stop(gateway)
        set_fault(sim_url, "ok")
    codes = ", ".join(f"{k}:{v}" for k, v in sorted(run.codes.items()))
    print(f"[{run.case} run] offset {run.offset_s:.2f} s -> open seen after {run.polled_s:.2f} s"
          f" (state_since {run.since_s:+.2f} s); claims sent {run.claims_sent} {codes}",
          flush=True)


def report(runs: list[Run], args: argparse.Namespace) -> None:
    print(machine())
    print(f"operator: timeout_s 2, deadline_s {DEADLINE_S:g}, breaker_fail_max 5, "
          f"probe_interval_s {PROBE_INTERVAL_S:g} (defaults); poll every {POLL_S * 1000:.0f} ms")
    labels = {"a": f"a with traffic ({args.rate:g} claims/s)", "b": "b no traffic (probe only)"}
    print(f"\n{'case':<32}{'run':>4}{'offset s':>10}{'seen open s':>13}{'state_since s':>15}"
          f"{'claims':>8}")
    for case in ("a", "b"):
        mine = [r for r in runs if r.case == case]
        for i, r in enumerate(mine, 1):
            print(f"{labels[case]:<32}{i:>4}{r.offset_s:>10.2f}{r.polled_s:>13.2f}"
                  f"{r.since_s:>15.2f}{r.claims_sent:>8}")
        seen = median([r.polled_s for r in mine])
        print(f"{labels[case]:<32}{'med':>4}{'':>10}{seen:>13.2f}"
              f"{median([r.since_s for r in mine]):>15.2f}")
        worst = max(r.polled_s for r in mine)
        verdict = "met" if worst < TARGETS[case] else "MISSED"
        print(f"target ({case}): under {TARGETS[case]:g} s: median {seen:.2f} s, worst "
              f"{worst:.2f} s -> {verdict}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case")
    parser.add_argument("--rate", type=float, default=20.0, help="claims/s in case (a)")
    parser.add_argument("--cap", type=float, default=20.0, help="max seconds to wait for open")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random offsets")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    runs = [Run(case, rng.uniform(0, PROBE_INTERVAL_S))
            for _ in range(args.runs) for case in ("a", "b")]
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp_name, \
            Procs(Path(tmp_name)) as procs:
        sim_url = procs.simulator("opera")
        for run in runs:
            one_run(procs, sim_url, run, args)
    report(runs, args)


if __name__ == "__main__":
    main()
