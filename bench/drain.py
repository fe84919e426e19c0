"""How fast the queue drains once the operator is back, and that nothing is sent twice.

Two phases, each with a fresh simulator, SQLite database and `gateway serve`:
  (a) limited: drain_per_s = 100, drain_ramp_s = 0, --limited-claims claims (2,000 by
      default, to keep the run short): the achieved rate over the steady part (the 10th
      to the 90th percentile of the claims' settle times), against drain_per_s (target:
      within 10 %);
  (b) unlimited: drain_per_s = 100000, drain_ramp_s = 0, --claims claims (20,000): the
      maximum drain rate, steady part and overall. Each drain is watched for at most
      --max-seconds (50 by default, to keep the run near 2 minutes): at the ~100/s this
      2-core machine drains, 20,000 need ~200 s, so by default (b) is measured over its
      first 50 s with the 20,000 queued; give --max-seconds 400 to drain them all.
Each phase: the simulator is put `down` and the breaker opened with a few claims; the
queue is filled while the operator is down; then the simulator is put back `ok` and the
time is taken from then until nothing is queued or pending. The rates come from the
claims' own `updated_at` (written when the operator's answer is committed), read from
the database afterwards; GET /v1/operators is only polled (every 0.25 s) to see the end.
Finally the simulator's ledger (GET /_ledger) must hold every claim exactly once.

Filling: `--fill api` submits the claims through POST /v1/claims (64 clients); at the
75-135 claims/s this machine queues (see outage_throughput.py) 20,000 would take 2.5 to
4.5 min, so the default `--fill direct` writes them with the gateway's own code (the same claim
construction and `transitions.enqueue` as the API's queued path: claim, history and
event rows, payload encrypted with the gateway's data key) straight into its database,
in batches, while the gateway runs with the breaker open.
The breaker's open time is set to 1-2 s (breaker_reset_s = 1, breaker_reset_max_s = 2)
so that recovery is noticed within ~2 s of the operator coming back; every other
operator setting is the default. Everything listens on 127.0.0.1; subprocesses are
killed on exit.
Run: .venv/bin/python bench/drain.py [--claims N] [--limited-claims N] [--fill direct|api]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sqlite3
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import httpx
from harness import (
    Procs,
    Result,
    cpu_seconds,
    create_key,
    free_port,
    load,
    machine,
    operator_board,
    sample_claim,
    set_fault,
    trip_breaker,
    write_config,
)

POLL_S = 0.25
FILL_BATCH = 500


@dataclass
class Phase:
    label: str
    drain_per_s: float
    wanted: int
    fill: str = ""
    fill_s: float = 0.0
    total: int = 0
    first_s: float = float("nan")  # operator up -> first claim settled
    drain_s: float = float("nan")  # operator up -> last claim settled
    steady_rate: float = float("nan")
    overall_rate: float = float("nan")
    finished: bool = False
    statuses: Counter[str] = field(default_factory=Counter)
    ledger_keys: int = 0
    ledger_dupes: int = 0
    ledger_received: int = 0
    settled: int = 0
    window_s: float = 0.0
    gateway_cpu: float = 0.0  # CPU seconds used while draining
    simulator_cpu: float = 0.0


def fill_direct(settings_path: Path, n: int, tag: str) -> None:
    """Queue n claims with the gateway's own code, as the API's queued path writes them."""
    from gateway.claims import service, transitions
    from gateway.claims.schemas import ClaimCreate
    from gateway.security.crypto import Cipher
    from gateway.security.keyring import load_keyring
    from gateway.settings import load_settings
    from gateway.storage.db import Database

    settings = load_settings(settings_path)
    ctx = SimpleNamespace(cipher=Cipher(load_keyring(settings)))
    operator = SimpleNamespace(name="opera")
    db = Database(settings.database_url)
    try:
        for start in range(0, n, FILL_BATCH):
            def batch(session, start=start):  # type: ignore[no-untyped-def]
                for i in range(start, min(n, start + FILL_BATCH)):
                    claim_in = ClaimCreate.model_validate(sample_claim(f"F{tag}-{i}"))
                    body = claim_in.model_dump(mode="json")
                    request_hash = ctx.cipher.index("claim-request", service.canonical_json(body))
                    claim = service._new_claim(  # type: ignore[arg-type]
                        ctx, claim_in, body, request_hash, None, operator,  # type: ignore[arg-type]
                        ctx.cipher.index(*claim_in.beneficiary.index_parts))
                    claim.first_http_status = 202
                    transitions.enqueue(session, claim, "received; operator open: queued")
            db.write_now(batch)
    finally:
        db.engine.dispose()


async def fill_api(url: str, key: str, n: int, tag: str, cap_s: float) -> Result:
    async def send(client: httpx.AsyncClient, i: int) -> int:
        return (await client.post("/v1/claims", json=sample_claim(f"F{tag}-{i}"))).status_code

    return await load(Result("fill", 202), url, {"Authorization": f"Bearer {key}"}, send,
                      n, 64, cap_s, warmup=0)


def settle_times(db_path: Path) -> list[float]:
    """Epoch seconds at which each settled claim's answer was committed, sorted."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT updated_at FROM claims WHERE status IN "
                            "('accepted', 'rejected') ORDER BY updated_at").fetchall()
    return [datetime.fromisoformat(r[0]).replace(tzinfo=UTC).timestamp() for r in rows]


def run_phase(procs: Procs, phase: Phase, args: argparse.Namespace) -> None:
    sim_url = procs.simulator("opera")
    port, db_path = free_port(), procs.tmp / f"drain-{phase.label}.db"
    config = write_config(procs.tmp, f"drain-{phase.label}", f"sqlite:///{db_path}",
                          int(sim_url.rsplit(":", 1)[1]), port,
                          operator={"drain_per_s": phase.drain_per_s, "drain_ramp_s": 0,
                                    "breaker_reset_s": 1, "breaker_reset_max_s": 2})
    key = create_key(config)
    board_key = create_key(config, role="operations")  # queue counts are for operations only
    url, gateway = procs.gateway(config, port)
    tag = secrets.token_hex(4)
    asyncio.run(trip_breaker(url, key, sim_url, tag))
    already = operator_board(url, board_key)["queued"]
    t0 = time.monotonic()
    phase.fill = args.fill
    if args.fill == "api":
        res = asyncio.run(fill_api(url, key, phase.wanted - already, tag, args.max_seconds))
        if res.errors:
            print(f"[{phase.label}] fill errors: {res.codes_text()}")
    else:
        fill_direct(config, phase.wanted - already, tag)
    phase.fill_s = time.monotonic() - t0
    row = operator_board(url, board_key, timeout=30.0)
    phase.total = row["queued"] + row["pending"]
    print(f"[{phase.label}] queued {phase.total} claims ({args.fill} fill, {phase.fill_s:.1f} s), "
          f"breaker {row['state']}; operator up now", flush=True)
    simulator = procs.by_url[sim_url]
    cpu0 = cpu_seconds(gateway), cpu_seconds(simulator)
    set_fault(sim_url, "ok")
    up, t_up = time.time(), time.monotonic()
    while time.monotonic() - t_up < args.max_seconds:
        time.sleep(POLL_S)
        row = operator_board(url, board_key, timeout=30.0)
        if row["queued"] + row["pending"] == 0:
            phase.finished = True
            break
    phase.window_s = time.monotonic() - t_up
    phase.gateway_cpu = cpu_seconds(gateway) - cpu0[0]
    phase.simulator_cpu = cpu_seconds(simulator) - cpu0[1]
    procs.stop(gateway)
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        phase.statuses = Counter(dict(conn.execute(
            "SELECT status, count(*) FROM claims GROUP BY status").fetchall()))
    times = settle_times(db_path)
    phase.settled = len(times)
    if len(times) >= 10:
        lo, hi = int(0.1 * len(times)), int(0.9 * len(times)) - 1
        phase.steady_rate = (hi - lo) / (times[hi] - times[lo])
        phase.first_s, phase.drain_s = times[0] - up, times[-1] - up
        phase.overall_rate = len(times) / (times[-1] - times[0])
    ledger = httpx.get(f"{sim_url}/_ledger", timeout=30.0).json()
    phase.ledger_keys = len(ledger["claims"])
    phase.ledger_dupes = sum(1 for c in ledger["claims"] if c["count"] != 1)
    phase.ledger_received = ledger["received"]
    procs.stop(sim_url)


def report(phases: list[Phase]) -> None:
    print(machine())
    print(f"\n{'phase':<12}{'drain_per_s':>12}{'queued':>8}{'fill s':>8}{'settled':>8}"
          f"{'up->1st s':>10}{'up->last s':>11}{'steady/s':>10}{'overall/s':>10}"
          f"{'gw CPU':>8}{'sim CPU':>8}  ledger keys, count!=1  statuses")
    for p in phases:
        statuses = ", ".join(f"{k}:{v}" for k, v in sorted(p.statuses.items()))
        print(f"{p.label:<12}{p.drain_per_s:>12.0f}{p.total:>8}{p.fill_s:>8.1f}{p.settled:>8}"
              f"{p.first_s:>10.2f}{p.drain_s:>11.1f}{p.steady_rate:>10.1f}"
              f"{p.overall_rate:>10.1f}{p.gateway_cpu / p.window_s:>8.0%}"
              f"{p.simulator_cpu / p.window_s:>8.0%}  {p.ledger_keys}, {p.ledger_dupes}"
              f"  {statuses}")
    print("\nsteady = settled claims between the 10th and 90th percentile of their settle "
          "times / that time;\noverall = all settled / first to last; CPU = share of one "
          "core while draining.")
    for p in phases:
        if not p.finished:
            left = p.total - p.settled
            print(f"({p.label}) NOT FINISHED: stopped after --max-seconds {p.window_s:.0f} s with "
                  f"{left} claims left; at {p.steady_rate:.0f}/s the whole drain would take "
                  f"~{p.total / p.steady_rate:.0f} s")
    limited = phases[0]
    error = limited.steady_rate / limited.drain_per_s - 1
    print(f"target (a): steady rate within 10 % of drain_per_s = {limited.drain_per_s:.0f}: "
          f"{limited.steady_rate:.1f}/s ({error:+.1%}) -> "
          f"{'met' if abs(error) <= 0.10 else 'MISSED'}")
    for p in phases:
        # a claim sent just before the gateway was stopped may be in the ledger unsettled
        ok = p.ledger_dupes == 0 and (p.ledger_keys == p.total if p.finished
                                      else p.ledger_keys >= p.settled)
        print(f"ledger ({p.label}): {p.ledger_keys} keys for {p.settled} settled of {p.total} "
              f"queued, {p.ledger_dupes} sent more than once -> {'ok' if ok else 'NOT OK'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=20000, help="claims for phase (b)")
    parser.add_argument("--limited-claims", type=int, default=2000, help="claims for (a)")
    parser.add_argument("--fill", choices=["direct", "api"], default="direct")
    parser.add_argument("--max-seconds", type=float, default=50.0,
                        help="wall-clock cap per fill (api) and per drain; (b) needs ~300 s "
                             "to drain 20,000 on a 2-core machine")
    args = parser.parse_args()
    phases = [Phase("a limited", 100, args.limited_claims),
              Phase("b unlimited", 100000, args.claims)]
    with tempfile.TemporaryDirectory(prefix="bench-drain-") as tmp_name, \
            Procs(Path(tmp_name)) as procs:
        for phase in phases:
            run_phase(procs, phase, args)
    report(phases)


if __name__ == "__main__":
    main()
