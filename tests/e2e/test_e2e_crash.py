"""A gateway killed mid-drain loses nothing and sends nothing twice blindly (CONTRACT.md 3.1, 4).

SIGKILL on the `gateway serve` process while it replays its queue, then a restart on the
same SQLite file: every claim ends accepted, and the operator saw each one once, or again
only after a status lookup. Claims the dead process had leased wait for their lease to
expire (the drain's lease is deadline_s + 5 s, gateway/queue/drain.py): ~15 s in all.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from procs import free_port, wait_http
from test_e2e_resilience import (
    assert_each_sent_once,
    assert_within_deadline,
    board,
    gateway_proc,
    invoices,
    ledger,
    pharmacy_auth,
    set_fault,
    simulator_proc,
    submit_all,
    wait_all_accepted,
    wait_for,
    write_gateway_config,
)

pytestmark = pytest.mark.slow
CLAIMS = 200
RESTART_WAIT_S = 60  # bound: the dead process's leases expire, then the drain finishes


def test_sigkill_mid_drain_then_restart_loses_nothing_and_never_resends_blindly(
    tmp_path: Path,
) -> None:
    sim_port, gw_port = free_port(), free_port()
    simulator = f"http://127.0.0.1:{sim_port}"
    config = write_gateway_config(tmp_path, simulator, port=gw_port, drain_per_s=200)
    auth = pharmacy_auth(config)
    url = f"http://127.0.0.1:{gw_port}"

    with simulator_proc(tmp_path, sim_port) as sim:
        wait_http(f"{simulator}/health", sim, tmp_path, "sim")
        set_fault(simulator, "down")
        with gateway_proc(tmp_path, config, gw_port, name="gw1") as first:
            answers = submit_all(url, auth, invoices("CRASH", CLAIMS))
            assert_within_deadline(answers, margin=2.0)  # 20 at once on a cold process
            assert {(a.status, a.body["status"]) for a in answers} == {(202, "queued")}
            ids = [a.body["id"] for a in answers]

            set_fault(simulator, "slow", latency_ms=50)  # back, and the drain starts
            received = wait_for(
                "the drain under way", lambda: 20 <= (n := ledger(simulator)["received"]) and n,
                timeout=15, interval=0.005)
            os.kill(first.pid, signal.SIGKILL)  # the process itself, no graceful stop
            first.wait(timeout=5)
        at_kill = ledger(simulator)["received"]
        assert received <= at_kill < CLAIMS, "the drain ended before the kill: nothing tested"

        with gateway_proc(tmp_path, config, gw_port, name="gw2"):
            left = board(url, auth)
            assert left["queued"] + left["pending"] > 0, left
            started = time.monotonic()
            wait_all_accepted(url, auth, ids, timeout=RESTART_WAIT_S)
            print(f"killed after {at_kill} received; {left['pending']} leased by the dead "
                  f"process; all accepted {time.monotonic() - started:.1f} s after restart")

        entries = ledger(simulator)["claims"]
        assert_each_sent_once(entries, ids, ambiguous=True)

