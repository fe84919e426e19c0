"""Where a queued claim's CPU goes, in process: the writer thread's time per function,
with and without a signed receipt.

Two gateways built as `gateway serve` builds them (create_app, its heap settled), each on
a fresh SQLite file, their operator's breaker open: claims go through the intake's own
code (`gateway.claims.service.submit`, no HTTP), --concurrency at a time over 16
pharmacies and 1,000 synthetic beneficiaries, and the two gateways take turns, round
after round (none, card, card, none, ...), so that the machine's drift falls on both.
Per claim, median of the rounds: the process's CPU (`time.process_time`) and its system
share, bytes written to storage (/proc/self/io), and for each function of FUNCTIONS the
CPU of the thread running it (`time.thread_time_ns`, summed over its calls: the writer
thread's own time, not the GIL's waits), which py-spy cannot give without stopping the
process hundreds of times a second. A function that calls another includes it.
Run: .venv/bin/python bench/intake_split.py [--claims N] [--rounds R] [--concurrency C]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import logging
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import structlog
from costs import CAPS, pharmacies
from harness import claim_of, gateway_in_process, machine

from gateway.claims import service
from gateway.claims.schemas import ClaimCreate
from gateway.main import settle_heap
from gateway.security.apikeys import Principal

BENEFICIARIES = 1000
MODES = ("none", "card")  # the operator's `provisional` offer
FUNCTIONS = (  # module:qualified name, as timed
    "gateway.storage.db:Database._write_group",
    "gateway.storage.db:_run_deferred",
    "gateway.storage.db:_flush_staged",
    "gateway.claims.repository:read_for_intake",
    "gateway.claims.service:_new_claim",
    "gateway.claims.transitions:enqueue",
    "gateway.audit.trail:AuditLog.append",
    "gateway.receipts.issuer:ReceiptIssuer.cover",
    "gateway.receipts.issuer:ReceiptIssuer._decide",
    "gateway.receipts.issuer:ReceiptIssuer._issue",
    "gateway.receipts.signing:ReceiptSigner.sign",
    "gateway.claims.repository:add_event",
)


class Timers:
    """Thread CPU per function and mode: each function of FUNCTIONS wrapped in place
    (and where another module imported it by name)."""

    def __init__(self) -> None:
        self.mode = ""  # outside the measured rounds: set-up and shutdown
        self.ns: dict[str, dict[str, int]] = {mode: {} for mode in ("", *MODES)}

    def install(self) -> None:
        for spec in FUNCTIONS:
            module_name, _, path = spec.partition(":")
            owner: Any = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            original = getattr(owner, name)
            timed = self._timed(original, path)
            setattr(owner, name, timed)
            if not parents:
                for module in list(sys.modules.values()):
                    if getattr(module, name, None) is original:
                        setattr(module, name, timed)

    def _timed(self, function: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time_ns()
            try:
                return function(*args, **kwargs)
            finally:
                spent = self.ns[self.mode]
                spent[name] = spent.get(name, 0) + time.thread_time_ns() - started
        return timed


def written_bytes() -> int:
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("write_bytes"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=2048, help="claims per mode per round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    timers = Timers()
    timers.install()
    finesses = pharmacies(16)
    tmp = Path(tempfile.mkdtemp(prefix="intake-split-"))
    per_round = args.claims // args.concurrency * args.concurrency
    results: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
    async with AsyncExitStack() as stack:
        gateways: dict[str, tuple[Any, list[Principal]]] = {}
        for mode in MODES:
            context, principals = await gateway_in_process(stack, tmp / mode, {
                "name": "opera", "adapter": "reference", "base_url": "http://127.0.0.1:9",
                "insurers": ["80*"], "provisional": mode, "breaker_reset_s": 600},
                finesses, CAPS)
            context.operators.get("opera").breaker.trip()
            gateways[mode] = (context, principals)
        settle_heap()
        sent = 0
        for round_ in range(args.rounds):
            for mode in (MODES if round_ % 2 == 0 else MODES[::-1]):
                context, principals = gateways[mode]

                async def client(start: int, context: Any = context,
                                 principals: list[Principal] = principals) -> None:
                    for i in range(start, start + per_round, args.concurrency):
                        body = claim_of(f"S{i}", i % BENEFICIARIES)
                        body["dispenser"] = {"finess": finesses[i % len(finesses)]}
                        result = await service.submit(
                            ctx=context, principal=principals[i % len(principals)],
                            claim_in=ClaimCreate.model_validate(body), idempotency_key=None)
                        if result.http_status != 202:
                            raise SystemExit(f"claim answered {result.http_status}")

                timers.mode = mode
                before, system, written = (time.process_time(), resource.getrusage(
                    resource.RUSAGE_SELF).ru_stime, written_bytes())
                await asyncio.gather(*(client(sent + c) for c in range(args.concurrency)))
                timers.mode = ""
                results[mode].append((
                    (time.process_time() - before) * 1000 / per_round,
                    (resource.getrusage(resource.RUSAGE_SELF).ru_stime - system) * 1000
                    / per_round, (written_bytes() - written) / 1024 / per_round))
                sent += per_round
    print(machine())
    print(f"claims: {per_round} per mode per round, {args.rounds} rounds, "
          f"{args.concurrency} at a time, 16 pharmacies, {BENEFICIARIES} beneficiaries\n")
    print(f"{'ms a claim (median of rounds), KB written':<48}" + "".join(
        f"{mode:>10}" for mode in MODES) + f"{'card-none':>11}")
    medians = {mode: [statistics.median(r[k] for r in results[mode]) for k in range(3)]
               for mode in MODES}
    for k, label in enumerate(("process CPU", "of which system", "KB written")):
        row = [medians[mode][k] for mode in MODES]
        print(f"{label:<48}" + "".join(f"{v:>10.3f}" for v in row) + f"{row[1] - row[0]:>+11.3f}")
    print("writer thread CPU, ms a claim (all rounds)")
    calls = args.rounds * per_round
    for spec in FUNCTIONS:
        name = spec.partition(":")[2]
        row = [timers.ns[mode].get(name, 0) / 1e6 / calls for mode in MODES]
        print(f"  {name:<46}" + "".join(f"{v:>10.3f}" for v in row)
              + f"{row[1] - row[0]:>+11.3f}")
    cpu = [medians[mode][0] for mode in MODES]
    print(f"\nthe receipt's share of the process's CPU per claim: {1 - cpu[0] / cpu[1]:.1%}")


if __name__ == "__main__":
    asyncio.run(main())
