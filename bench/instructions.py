"""Instructions a claim costs the gateway, counted by callgrind: figures that hold still.

Why: on these shared cores a benchmark's claims/s move by 20-25 % from run to run (a
bare CPU loop's time by as much from second to second), while each change still to make
on the claim path is worth a few percent: no timed run can tell such a change from the
noise. Valgrind's callgrind counts the instructions a process executes, which do not
depend on what else the machine is doing.

Three gateways built in process as `gateway serve` builds them (`create_app`), each on
a fresh SQLite file, its claims sent through the intake's own code
(`gateway.claims.service.submit`: validation of the model, storage, receipt, operator
call; no HTTP server), --concurrency at a time over 4 pharmacies and 1,000 synthetic
beneficiaries, the three in turn round after round:
  queued  the operator's breaker open: queued (202), no receipt;
  card    the same, with a signed provisional receipt;
  sent    the operator healthy (bench/stub_operator.py, another process, not counted):
          sent and answered (201), the synchronous path.
Per claim, the median of the rounds: the instructions of the whole process, of its event
loop thread and of the others (the database's worker threads), and the write groups
(transactions) per claim. Not counted: the kernel's work for the process (its system
time: sockets, fsync), the stub's, and waiting. Under valgrind the threads run one at a
time, so write groups form as they would on one core; the figures compare builds and
paths, they are not a profile of a production run.

The script runs itself under valgrind (Debian package `valgrind`), with instrumentation
switched on only for the measured rounds (`callgrind_control`); it takes minutes.
Run: .venv/bin/python bench/instructions.py [--claims N] [--rounds R] [--concurrency C]
     [--keep DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

MODES = ("queued", "card", "sent")
BENEFICIARIES = 1000
PHARMACIES = 4
INNER = "BENCH_INSTRUCTIONS_INNER"  # set in the run under valgrind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=256, help="claims per mode per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--keep", type=Path, help="keep callgrind's dumps in this directory "
                        "(one per thread and round: read them with callgrind_annotate)")
    args = parser.parse_args()
    if os.environ.get(INNER):  # on uvloop, as `gateway serve` runs (uvicorn takes it)
        import uvloop
        from harness import stub_operator

        with stub_operator() as url:
            uvloop.run(measure(args, Path(os.environ[INNER]), url))
        return
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is needed (Debian package valgrind)")
    out = Path(tempfile.mkdtemp(prefix="instructions-", dir=args.keep))
    try:
        subprocess.run(  # noqa: S603 - this script, under valgrind
            [valgrind, "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
             f"--callgrind-out-file={out}/cg.%p", f"--log-file={out}/valgrind.log",
             sys.executable, __file__, *sys.argv[1:]],
            env={**os.environ, INNER: str(out)}, check=True)
        report(args, out)
    finally:
        if args.keep is None:
            shutil.rmtree(out, ignore_errors=True)
        else:
            print(f"   callgrind's dumps: {out}")


class Callgrind:
    """Switches this process's instrumentation on and off and dumps its counts, one dump
    per measured round, named after it."""

    def __init__(self) -> None:
        self.pid = str(os.getpid())
        self.control = shutil.which("callgrind_control") or "callgrind_control"

    def _ask(self, *args: str) -> None:
        subprocess.run([self.control, *args, self.pid], check=True,  # noqa: S603
                       capture_output=True)

    @contextmanager
    def counting(self, name: str) -> Iterator[None]:
        self._ask("--zero")
        self._ask("--instr=on")
        try:
            yield
        finally:
            self._ask("--instr=off")
            self._ask(f"--dump={name}")


async def measure(args: argparse.Namespace, out: Path, operator_url: str) -> None:
    # imported here: the outer run (valgrind's parent) needs none of it
    import structlog
    from costs import CAPS, pharmacies
    from harness import gateway_in_process

    from gateway.main import settle_heap
    from gateway.security.apikeys import Principal
    from gateway.storage import db

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    groups = {"": 0}
    mode_now = [""]
    write_group = db.Database._write_group

    def counted(self: db.Database, works: Any) -> Any:
        groups[mode_now[0]] = groups.get(mode_now[0], 0) + 1
        return write_group(self, works)

    db.Database._write_group = counted  # type: ignore[method-assign]
    finesses = pharmacies(PHARMACIES)
    per_round = args.claims // args.concurrency * args.concurrency
    callgrind = Callgrind()
    async with AsyncExitStack() as stack:
        gateways: dict[str, tuple[Any, list[Principal]]] = {}
        for mode in MODES:
            context, principals = await gateway_in_process(stack, out / mode, {
                "name": "opera", "adapter": "reference", "base_url": operator_url,
                "insurers": ["80*"], "provisional": "card" if mode == "card" else "none",
                # under valgrind a call runs ~50 times slower: a claim sent must not
                # outlive the default 3 s deadline and be queued (the smoke run in CI did)
                "timeout_s": 120, "deadline_s": 120, "breaker_reset_s": 3600},
                finesses, CAPS)
            if mode != "sent":
                context.operators.get("opera").breaker.trip()
            gateways[mode] = (context, principals)
        await _round(gateways, finesses, "warm-up",
                     args.concurrency, args.concurrency * 4)
        settle_heap()
        for round_ in range(args.rounds):
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                mode_now[0] = mode
                with callgrind.counting(f"{mode}-{round_}"):
                    await _round({mode: gateways[mode]},
                                 finesses, f"r{round_}", args.concurrency, per_round)
                mode_now[0] = ""
    (out / "groups").write_text(" ".join(f"{mode}={groups.get(mode, 0)}" for mode in MODES))


async def _round(gateways: dict[str, Any], finesses: list[str], tag: str, concurrency: int,
                 claims: int) -> None:
    """`claims` claims to each gateway, `concurrency` at a time (`submit_in_process`)."""
    from harness import submit_in_process

    for mode, (context, principals) in gateways.items():
        await submit_in_process(context, principals, finesses, mode=mode, tag=tag,
                                claims=claims, concurrency=concurrency,
                                beneficiaries=BENEFICIARIES)


def report(args: argparse.Namespace, out: Path) -> None:
    """Each dump's instructions (one file per thread and dump), by mode and round; per
    claim, the median of the rounds."""
    from harness import machine

    per_round = args.claims // args.concurrency * args.concurrency
    # (mode, round) -> [event loop thread's instructions, the other threads']
    dumps: dict[tuple[str, str], list[int]] = {}
    for dump in out.glob("cg.*"):
        text = dump.read_text(errors="replace")
        trigger = re.search(r"^desc: Trigger: dump (\S+)-(\d+)$", text, re.MULTILINE)
        totals = re.search(r"^totals: (\d+)", text, re.MULTILINE)
        thread = re.search(r"^thread: (\d+)", text, re.MULTILINE)
        if trigger and totals and thread:
            counted = dumps.setdefault((trigger.group(1), trigger.group(2)), [0, 0])
            counted[thread.group(1) != "1"] += int(totals.group(1))
    groups = dict(item.split("=") for item in (out / "groups").read_text().split())
    print(machine())
    print(f"claims: {per_round} per mode per round, {args.rounds} rounds, "
          f"{args.concurrency} at a time, {PHARMACIES} pharmacies, {BENEFICIARIES} beneficiaries\n")
    print(f"{'millions of instructions a claim':<34}{'whole':>8}{'loop':>8}{'others':>8}"
          f"{'groups':>8}   rounds (whole)")
    whole: dict[str, float] = {}
    for mode in MODES:
        rounds = [dumps[key] for key in sorted(dumps) if key[0] == mode]
        if len(rounds) != args.rounds:
            raise SystemExit(f"{mode}: {len(rounds)} rounds counted of {args.rounds}")
        per_claim = [[value / per_round / 1e6 for value in counted] for counted in rounds]
        whole[mode] = statistics.median(loop + others for loop, others in per_claim)
        print(f"{mode:<34}{whole[mode]:>8.2f}"
              f"{statistics.median(loop for loop, _ in per_claim):>8.2f}"
              f"{statistics.median(others for _, others in per_claim):>8.2f}"
              f"{int(groups[mode]) / (per_round * args.rounds):>8.3f}   "
              + ", ".join(f"{loop + others:.2f}" for loop, others in per_claim))
    receipt = 1 - whole["queued"] / whole["card"]
    print(f"\n   a signed receipt: {receipt:.1%} of a claim's instructions with it "
          f"(the throughput it would cost, were instructions all)")
    print(f"   sent / queued: x{whole['sent'] / whole['queued']:.2f} the instructions (the "
          f"throughput ratio, were instructions all: x{whole['queued'] / whole['sent']:.2f})")


if __name__ == "__main__":
    main()
