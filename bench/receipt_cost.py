"""What the provisional coverage receipt costs in queued-claims throughput (issue 4).

In one run, the same load as bench/outage_throughput.py (POST /v1/claims to `gateway
serve` on SQLite, the operator's simulator `down` and its breaker open, warm-up first,
same count and concurrency) against gateways that differ only in the operator's
`provisional` setting:
  card  every queued claim gets a policy decision (card validity, caps, exposure sums),
        an Ed25519-signed JWS receipt and its storage (receipt row, history, event);
  none  the decision "refused: not_offered", no receipt.
Runs go in pairs, A B then B A (--rounds pairs: card none, none card, card none, ...),
so that neither mode always runs first; each run starts a fresh gateway on a fresh
database, trips the breaker, measures, and stops it: one gateway at a time on the
machine. With --interleaved, both gateways start once (a database each) and the pairs
of slices go to one at a time in the same order: on a machine whose speed drifts
between runs, adjacent slices see it alike (each gateway's database then grows over
the slices: --requests x --rounds claims). Every answer is checked: `card` must answer
coverage.decision "provisional" with a compact EdDSA token, `none` "refused"
(not_offered) without a receipt.
The claims come from one pharmacy for --beneficiaries synthetic people in turn (1000;
a beneficiary's same-day sum then covers a few receipts, as at a counter; 1 repeats one
person, whose sum grows with every claim); the caps of [provisional] are raised so that
none refuses, and breaker_reset_s is long so that the breaker stays open throughout.
Each run also reads the gateway's own CPU time (user + system) and bytes written to
storage per answered claim (warm-up included) from /proc: the receipt's share of the
gateway's CPU, less sensitive to the load generator than throughput is, is printed too.
Target: cost = 1 - median claims/s (card) / median claims/s (none) < 20 %.
Everything listens on 127.0.0.1; subprocesses are stopped on exit.
Run: .venv/bin/python bench/receipt_cost.py [--requests N] [--concurrency C] [--rounds R]
     [--beneficiaries B] [--interleaved]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import httpx
from harness import (
    Procs,
    Result,
    bytes_written,
    claim_of,
    cpu_seconds,
    create_key,
    free_port,
    load,
    machine,
    median,
    operator_board,
    trip_breaker,
    write_config,
)

TARGET_COST = 0.20
HUGE_CAP = 10**12
CAPS = {"max_amc_cents_per_claim": HUGE_CAP, "max_amc_cents_per_beneficiary_per_day": HUGE_CAP,
        "max_outstanding_cents_per_pharmacy": HUGE_CAP}
EXPECTED = {"card": "provisional+EdDSA token", "none": "refused:not_offered, no receipt"}


def check(mode: str, body: dict[str, object]) -> str:
    """What the answer says about coverage, as EXPECTED spells it when it is right."""
    coverage = body.get("coverage")
    if not isinstance(coverage, dict):
        return "no coverage"
    decision, receipt = coverage.get("decision"), coverage.get("receipt")
    if mode == "card":
        token = receipt.get("token") if isinstance(receipt, dict) else None
        if decision != "provisional" or not isinstance(token, str) or token.count(".") != 2:
            return f"{decision}:{coverage.get('reason')}, token={bool(token)}"
        head = token.split(".", 1)[0]
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        ok = header.get("alg") == "EdDSA" and header.get("kid")
        return EXPECTED[mode] if ok else f"provisional, bad header {header}"
    if decision == "refused" and coverage.get("reason") == "not_offered" and receipt is None:
        return EXPECTED[mode]
    return f"{decision}:{coverage.get('reason')}, receipt={receipt is not None}"


def measure(name: str, mode: str, url: str, key: str, proc: subprocess.Popen[bytes],
            args: argparse.Namespace, seen: Counter[str]) -> Result:
    """The load, with the gateway's CPU seconds and bytes written per answered claim."""
    cpu, written = cpu_seconds(proc), bytes_written(proc)
    res = asyncio.run(claims(name, mode, url, key, args, seen))
    answered = sum(seen.values())
    res.usage = {"cpu_ms": (cpu_seconds(proc) - cpu) * 1000 / answered,
                 "kb": (bytes_written(proc) - written) / 1024 / answered}
    return res


async def claims(name: str, mode: str, url: str, key: str, args: argparse.Namespace,
                 seen: Counter[str]) -> Result:
    tag = secrets.token_hex(4)

    async def send(client: httpx.AsyncClient, i: int) -> int:
        answer = await client.post("/v1/claims",
                                   json=claim_of(f"R{tag}-{i}", i % args.beneficiaries))
        seen[check(mode, answer.json()) if answer.status_code == 202 else "not queued"] += 1
        return answer.status_code

    return await load(Result(name, 202), url, {"Authorization": f"Bearer {key}"}, send,
                      args.requests, args.concurrency, args.max_seconds)


def start(procs: Procs, sim_url: str, mode: str,
          name: str) -> tuple[str, str, subprocess.Popen[bytes]]:
    """A gateway of this mode on a fresh database, its breaker open: (url, key, process)."""
    port = free_port()
    config = write_config(procs.tmp, name, f"sqlite:///{procs.tmp / f'{name}.db'}",
                          int(sim_url.rsplit(":", 1)[1]), port,
                          operator={"provisional": mode, "breaker_reset_s": 600},
                          sections={"provisional": CAPS})
    key = create_key(config)
    url, proc = procs.gateway(config, port)
    tripped = asyncio.run(trip_breaker(url, key, sim_url, secrets.token_hex(4)))
    print(f"[{name}] breaker open after {tripped:.1f} s", flush=True)
    return url, key, proc


def interleaved(procs: Procs, sim_url: str,
                args: argparse.Namespace) -> list[tuple[str, Result, Counter[str]]]:
    """Both gateways up at once, the load sent to one at a time in turn (A B B A ...):
    adjacent slices see the machine in the same state, and neither starts cold."""
    gateways = {mode: start(procs, sim_url, mode, f"{mode}-side") for mode in ("card", "none")}
    runs: list[tuple[str, Result, Counter[str]]] = []
    for run in range(1, args.rounds + 1):
        for mode in ("card", "none") if run % 2 else ("none", "card"):
            url, key, proc = gateways[mode]
            seen: Counter[str] = Counter()
            res = measure(f"{mode}-{run}", mode, url, key, proc, args, seen)
            print(f"[{mode}-{run}] {res.rps:.1f} claims/s", flush=True)
            runs.append((mode, res, seen))
    for mode, (url, key, _) in gateways.items():
        row = operator_board(url, key)
        if row["state"] != "open":
            runs[-1][2][f"{mode}: breaker {row['state']} after the load"] += 1
    return runs


def one_run(procs: Procs, sim_url: str, mode: str, run: int,
            args: argparse.Namespace) -> tuple[Result, Counter[str]]:
    name = f"{mode}-{run}"
    url, key, proc = start(procs, sim_url, mode, name)
    seen: Counter[str] = Counter()
    try:
        res = measure(name, mode, url, key, proc, args, seen)
        row = operator_board(url, key)
        print(f"[{name}] after the load: state={row['state']}; "
              f"{res.rps:.1f} claims/s", flush=True)
        if row["state"] != "open":
            seen[f"breaker {row['state']} after the load"] += 1
    finally:
        procs.stop(proc)  # one gateway at a time: they share 2 cores
    return res, seen


def report(runs: list[tuple[str, Result, Counter[str]]], args: argparse.Namespace) -> None:
    print(machine())
    print(f"load: one pharmacy, {args.beneficiaries} synthetic beneficiaries in turn")
    print(f"\n{'run':<10}{'requests':>9}{'conc':>6}{'claims/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'errors':>8}{'CPU ms':>8}{'KB':>6}  codes; answers checked (warm-up included)")
    for _, r, seen in runs:
        stopped = "  (stopped by --max-seconds)" if len(r.latencies) < args.requests else ""
        answers = ", ".join(f"{k}:{v}" for k, v in sorted(seen.items()))
        print(f"{r.name:<10}{len(r.latencies):>9}{args.concurrency:>6}{r.rps:>10.1f}"
              f"{r.pct(0.5):>9.1f}{r.pct(0.99):>9.1f}{r.errors:>8}{r.usage['cpu_ms']:>8.2f}"
              f"{r.usage['kb']:>6.0f}  {r.codes_text()}; {answers}{stopped}")
    med: dict[str, dict[str, float]] = {}
    for mode in ("card", "none"):
        mine = [r for m, r, _ in runs if m == mode]
        med[mode] = {"rps": median([r.rps for r in mine]),
                     "cpu": median([r.usage["cpu_ms"] for r in mine]),
                     "kb": median([r.usage["kb"] for r in mine]),
                     "p50": median([r.pct(0.5) for r in mine]),
                     "p99": median([r.pct(0.99) for r in mine])}
        print(f"median {mode:<5}: {med[mode]['rps']:.1f} claims/s, p50 {med[mode]['p50']:.1f} "
              f"ms, p99 {med[mode]['p99']:.1f} ms; gateway CPU {med[mode]['cpu']:.2f} ms and "
              f"{med[mode]['kb']:.0f} KB written per claim ({len(mine)} runs)")
    by_mode = [dict((mode, r) for mode, r, _ in pair) for pair in zip(runs[::2], runs[1::2],
                                                                      strict=False)]
    pairs = [1 - pair["card"].rps / pair["none"].rps for pair in by_mode]
    print("cost per pair (1 - card/none): " + ", ".join(f"{c:.1%}" for c in pairs))
    cpu_pairs = [1 - pair["none"].usage["cpu_ms"] / pair["card"].usage["cpu_ms"]
                 for pair in by_mode]
    print("receipt's share of the gateway's CPU per claim (1 - CPU none / CPU card): "
          f"{1 - med['none']['cpu'] / med['card']['cpu']:.1%} of medians; pairs "
          + ", ".join(f"{c:.1%}" for c in cpu_pairs))
    cost = 1 - med["card"]["rps"] / med["none"]["rps"]
    wrong = sum(n for mode, _, seen in runs for k, n in seen.items() if k != EXPECTED[mode])
    errors = sum(r.errors for _, r, _ in runs)
    verdict = "met" if cost < TARGET_COST and not wrong and not errors else "MISSED"
    print(f"target: receipt cost = 1 - median card / median none < {TARGET_COST:.0%}: "
          f"{cost:.1%} (errors {errors}, unexpected answers {wrong}) -> {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="measured requests per run")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent client workers")
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs (card, none)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="wall-clock cap per loop")
    parser.add_argument("--beneficiaries", type=int, default=1000,
                        help="synthetic people the claims cycle through (1: one person)")
    parser.add_argument("--interleaved", action="store_true",
                        help="both gateways up at once, one database each, the load sent to "
                             "one at a time in turn (default: a fresh gateway per run)")
    args = parser.parse_args()
    if not 1 <= args.rounds <= (20 if args.interleaved else 10):
        parser.error("--rounds must be between 1 and 10 (20 with --interleaved)")
    if not 1 <= args.beneficiaries <= 998_001:
        parser.error("--beneficiaries must be between 1 and 998001")
    runs: list[tuple[str, Result, Counter[str]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-receipt-") as tmp_name, \
            Procs(Path(tmp_name)) as procs:
        sim_url = procs.simulator("opera")
        if args.interleaved:
            runs = interleaved(procs, sim_url, args)
        else:
            for run in range(1, args.rounds + 1):
                for mode in ("card", "none") if run % 2 else ("none", "card"):
                    res, seen = one_run(procs, sim_url, mode, run, args)
                    runs.append((mode, res, seen))
    report(runs, args)


if __name__ == "__main__":
    main()
