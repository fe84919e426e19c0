"""`gateway serve --workers 2` on PostgreSQL: two processes on one port drain one queue,
each claim sent once, within the shared `drain_per_s`; SIGTERM to the parent stops both
workers cleanly mid-drain (nothing left `pending`), and a restart drains the rest.

Claims are queued while `gateway simulator` is down, then it comes back and the drain
begins; after a few seconds the parent alone gets SIGTERM (as systemd's KillMode=mixed
sends it). Needs GATEWAY_TEST_POSTGRES_URL; a fresh database is made on that server and
dropped at the end (the fixture of test_e2e_two_instances.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from procs import free_port, output, spawn, wait_http
from sqlalchemy.engine import make_url
from test_e2e_resilience import (
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
from test_e2e_two_instances import POSTGRES_URL, database_url  # noqa: F401 - the fixture

from gateway.queue.repository import CATCH_UP_S

pytestmark = [
    pytest.mark.slow, pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="needs GATEWAY_TEST_POSTGRES_URL"),
]
CLAIMS = 240
DRAIN_PER_S = 40
DRAIN_BEFORE_STOP_S = 3.0
ANSWER_SLACK_S = 0.25  # a claim's answer is recorded a little after its send slot
STOP_BOUND_S = 20  # deadline 0.6 s + 5 s grace for requests, then the lifespans' stops


@contextmanager
def workers_proc(cwd: Path, config: Path, port: int,
                 name: str) -> Iterator[subprocess.Popen[bytes]]:
    with spawn("serve", "--config", str(config), "--port", str(port), "--workers", "2",
               cwd=cwd, name=name) as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, cwd, name)
        wait_for("two workers counting", lambda: len(worker_pids(proc)) == 2
                 and all(counter_file(proc, pid).exists() for pid in worker_pids(proc)),
                 timeout=30, interval=0.1)
        yield proc


def worker_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    pids = []
    for task in Path(f"/proc/{proc.pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                command = Path(f"/proc/{child}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in command:
                pids.append(int(child))
    return pids


def counter_file(proc: subprocess.Popen[bytes], pid: int) -> Path:
    """Where worker `pid` keeps its Prometheus counters (the supervisor's directory)."""
    environ = dict(item.split(b"=", 1) for item in
                   Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item)
    return Path(environ[b"PROMETHEUS_MULTIPROC_DIR"].decode()) / f"counter_{pid}.db"


def drained_by(proc: subprocess.Popen[bytes]) -> dict[int, float]:
    """Claims each worker's drain has sent so far (its own `gateway_drain_sent_total`)."""
    from prometheus_client.multiprocess import MultiProcessCollector

    sent = {}
    for pid in worker_pids(proc):
        metrics = MultiProcessCollector.merge([str(counter_file(proc, pid))])
        sent[pid] = sum(sample.value for metric in metrics
                        if metric.name == "gateway_drain_sent"
                        for sample in metric.samples if sample.name.endswith("_total"))
    return sent


def scraped_drain_sent(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("gateway_drain_sent_total{"))


def statuses(database: str) -> dict[str, int]:
    conninfo = make_url(database).set(drivername="postgresql").render_as_string(
        hide_password=False)
    with psycopg.connect(conninfo) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM claims GROUP BY status")
                    .fetchall())


def accepted_at(claim: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(next(h["at"] for h in claim["history"]
                                       if h["status"] == "accepted"))


def test_two_workers_drain_each_claim_once_and_stop_cleanly_on_sigterm(
    tmp_path: Path, database_url: str,  # noqa: F811 - the imported fixture
) -> None:
    sim_port, port = free_port(), free_port()
    simulator, url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    config = write_gateway_config(tmp_path, simulator, port=port, database_url=database_url,
                                  drain_per_s=DRAIN_PER_S, drain_ramp_s=0)
    auth = pharmacy_auth(config)

    with simulator_proc(tmp_path, sim_port) as sim:
        wait_http(f"{simulator}/health", sim, tmp_path, "sim")
        set_fault(simulator, "down")
        with workers_proc(tmp_path, config, port, "gw1") as gateway:
            answers = submit_all(url, auth, invoices("WRK", CLAIMS))
            assert {(a.status, a.body["status"]) for a in answers} == {(202, "queued")}
            ids = [a.body["id"] for a in answers]

            set_fault(simulator, "ok")
            wait_for("the drain under way", lambda: scraped_drain_sent(url) > 0, timeout=15)
            time.sleep(DRAIN_BEFORE_STOP_S)
            by_worker = drained_by(gateway)
            # every worker's counters add up on /metrics, whichever answers the scrape
            assert scraped_drain_sent(url) >= sum(by_worker.values())
            stopped_at, stopped_wall = time.monotonic(), datetime.now(UTC)
            gateway.send_signal(signal.SIGTERM)  # to the parent alone
            assert gateway.wait(timeout=STOP_BOUND_S) == 0, output(tmp_path, "gw1")
            took = time.monotonic() - stopped_at
        left = statuses(database_url)
        print(f"drained by each worker before SIGTERM: {by_worker}; stop took {took:.1f} s; "
              f"then {left}")
        assert len(by_worker) == 2 and min(by_worker.values()) > 0, by_worker
        assert set(left) <= {"queued", "accepted"}, left  # nothing left `pending`
        assert left.get("queued", 0) > 0, left  # stopped mid-drain indeed
        assert not [pid for pid in by_worker if Path(f"/proc/{pid}").exists()]

        restarted_wall = datetime.now(UTC)
        with workers_proc(tmp_path, config, port, "gw2") as gateway:
            claims = wait_all_accepted(url, auth, ids, timeout=60)
            # now SIGTERM to the whole process group (Ctrl-C, systemd's KillMode=
            # control-group): the workers get it twice, the parent must not replace them
            stopped_at = time.monotonic()
            os.killpg(gateway.pid, signal.SIGTERM)
            assert gateway.wait(timeout=STOP_BOUND_S) == 0, output(tmp_path, "gw2")
            print(f"group stop took {time.monotonic() - stopped_at:.1f} s")
            assert "worker_replaced" not in output(tmp_path, "gw2")
        entries = ledger(simulator)["claims"]

    counts = {entry["key"]: entry["count"] for entry in entries}
    assert set(counts) == set(ids), set(ids) ^ set(counts)
    assert [key for key, count in counts.items() if count != 1] == []
    # the pace of each run: the shared schedule gives one send slot every 1/drain_per_s,
    # and a schedule fallen behind catches up by at most CATCH_UP_S, so a window of T
    # seconds holds at most drain_per_s * (T + CATCH_UP_S) sends (+ slack for the answers'
    # commits). Two drains each keeping its own pace would show about twice as much.
    accepted = sorted(accepted_at(claim) for claim in claims.values())
    for run in ([at for at in accepted if at < stopped_wall],
                [at for at in accepted if at >= restarted_wall]):
        span = (run[-1] - run[0]).total_seconds()
        allowed = DRAIN_PER_S * (span + CATCH_UP_S + ANSWER_SLACK_S)
        print(f"{len(run)} accepted in {span:.2f} s ({(len(run) - 1) / span:.1f}/s), "
              f"at most {allowed:.0f} allowed")
        assert len(run) - 1 <= allowed, f"{len(run)} in {span:.2f} s: drain_per_s exceeded"
