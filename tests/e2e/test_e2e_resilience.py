"""Breakers, probes, queue and drain end to end: `gateway serve` against `gateway simulator`
over real sockets, one fault mode at a time (CONTRACT.md sections 2, 3.1, 3.6, 4).

The helpers here are shared with test_e2e_crash.py and test_e2e_two_instances.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from procs import dev_config, free_port, operator_toml, spawn, wait_http

from gateway.demo.samples import sample_claim
from gateway.keys.admin import create_key
from gateway.settings import load_settings
from gateway.storage.migrate import upgrade

pytestmark = pytest.mark.slow
T = TypeVar("T")

TIMINGS: dict[str, object] = {
    "timeout_s": 0.3, "deadline_s": 0.6, "breaker_fail_max": 3, "breaker_reset_s": 1,
    "breaker_reset_max_s": 2, "probe_interval_s": 0.5, "drain_per_s": 50, "drain_ramp_s": 0,
}
DEADLINE_S = 0.6
MARGIN_S = 0.3  # client side: HTTP, the database writes around the operator call


# --- helpers ------------------------------------------------------------------------------

@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    elapsed: float


@dataclass
class Stack:
    cwd: Path
    config: Path
    url: str
    simulator: str
    auth: dict[str, str]
    procs: dict[str, Any] = field(default_factory=dict)


def write_gateway_config(cwd: Path, simulator: str, *, port: int, database_url: str = "",
                         **operator: object) -> Path:
    """A development config: absolute data dir and database, one operator "opera"."""
    config = cwd / "gw.toml"
    config.write_text(dev_config(
        operator_toml("opera", simulator, ["80*"], **{**TIMINGS, **operator}),
        database_url=database_url or f"sqlite:///{cwd / 'gateway.db'}",
        data_dir=str(cwd / "var"), public_url=f"http://127.0.0.1:{port}",
    ))
    return config


OPERATIONS_OF: dict[str, dict[str, str]] = {}  # a pharmacy's Authorization -> operations'


def pharmacy_auth(config: Path) -> dict[str, str]:
    """Migrate the database and create a pharmacy key (also generates the dev keys), and
    an operations key that `board` uses: pharmacies see operators' states only."""
    settings = load_settings(config)
    upgrade(settings.database_url)
    _, secret = create_key(settings, role="pharmacy", finess="330001231", label="e2e")
    _, operations = create_key(settings, role="operations", label="e2e board")
    OPERATIONS_OF[f"Bearer {secret}"] = {"Authorization": f"Bearer {operations}"}
    return {"Authorization": f"Bearer {secret}"}


@contextmanager
def simulator_proc(cwd: Path, port: int) -> Iterator[Any]:
    with spawn("simulator", "--port", str(port), "--name", "opera", cwd=cwd, name="sim") as sim:
        yield sim


@contextmanager
def gateway_proc(cwd: Path, config: Path, port: int, name: str = "gw") -> Iterator[Any]:
    with spawn("serve", "--config", str(config), "--port", str(port), cwd=cwd,
               name=name) as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, cwd, name)
        yield proc


@contextmanager
def running_stack(cwd: Path, **operator: object) -> Iterator[Stack]:
    sim_port, gw_port = free_port(), free_port()
    simulator = f"http://127.0.0.1:{sim_port}"
    config = write_gateway_config(cwd, simulator, port=gw_port, **operator)
    auth = pharmacy_auth(config)
    with ExitStack() as stack:
        sim = stack.enter_context(simulator_proc(cwd, sim_port))
        gw = stack.enter_context(gateway_proc(cwd, config, gw_port))
        wait_http(f"{simulator}/health", sim, cwd, "sim")
        yield Stack(cwd, config, f"http://127.0.0.1:{gw_port}", simulator, auth,
                    {"sim": sim, "gw": gw})


def set_fault(simulator: str, mode: str, **extra: object) -> None:
    response = httpx.post(f"{simulator}/_faults", json={"mode": mode, **extra}, timeout=5)
    assert response.status_code == 200, response.text


def ledger(simulator: str, *, health: bool = False) -> dict[str, Any]:
    params = {"health": "true"} if health else {}
    response = httpx.get(f"{simulator}/_ledger", params=params, timeout=5)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def board(url: str, auth: dict[str, str]) -> dict[str, Any]:
    """This gateway's row for operator "opera" in GET /v1/operators, read with the
    operations key made beside the pharmacy key `auth` (queue counts included)."""
    headers = OPERATIONS_OF.get(auth.get("Authorization", ""), auth)
    response = httpx.get(f"{url}/v1/operators", headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    return next(row for row in response.json() if row["name"] == "opera")


def wait_for(what: str, check: Callable[[], T | None], timeout: float,
             interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")


def submit(client: httpx.Client, invoice: str) -> Answer:
    started = time.monotonic()
    response = client.post("/v1/claims", json=sample_claim(invoice))
    return Answer(response.status_code, response.json(), time.monotonic() - started)


def submit_all(url: str, auth: dict[str, str], invoices: list[str],
               concurrency: int = 20) -> list[Answer]:
    with httpx.Client(base_url=url, headers=auth, timeout=10,
                      limits=httpx.Limits(max_connections=concurrency)) as client, \
            ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda invoice: submit(client, invoice), invoices))


def claim_of(url: str, auth: dict[str, str], claim_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/claims/{claim_id}", headers=auth, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_all_accepted(url: str, auth: dict[str, str], ids: list[str],
                      timeout: float) -> dict[str, dict[str, Any]]:
    """Wait until the board shows nothing waiting, then every claim must be accepted."""
    def drained() -> dict[str, Any] | None:
        row = board(url, auth)
        assert row["failed"] == 0, row
        return row if row["queued"] == 0 and row["pending"] == 0 else None

    wait_for("queue drained", drained, timeout, interval=0.2)
    with httpx.Client(base_url=url, headers=auth, timeout=5) as client, \
            ThreadPoolExecutor(10) as pool:
        claims = list(pool.map(lambda i: client.get(f"/v1/claims/{i}").json(), ids))
    statuses = {claim["id"]: claim["status"] for claim in claims}
    assert set(statuses.values()) == {"accepted"}, statuses
    return {claim["id"]: claim for claim in claims}


def assert_each_sent_once(entries: list[dict[str, Any]], ids: list[str], *,
                          ambiguous: bool = False) -> None:
    """Every claim reached the operator; a second send only after a status lookup."""
    by_key = {entry["key"]: entry for entry in entries}
    assert set(by_key) == set(ids), set(ids) ^ set(by_key)
    twice_blind = [e for e in entries if e["count"] > 1 and e["lookups"] < 1]
    assert twice_blind == [], twice_blind
    if not ambiguous:
        assert [e for e in entries if e["count"] != 1] == []


def assert_within_deadline(answers: list[Answer], margin: float = MARGIN_S) -> None:
    late = [(a.status, round(a.elapsed, 3)) for a in answers if a.elapsed > DEADLINE_S + margin]
    assert late == [], f"answers later than deadline_s + {margin}: {late}"
    assert {a.status for a in answers} <= {201, 202}, [(a.status, a.body) for a in answers]


def invoices(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{n:04d}" for n in range(count)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path) as running:
        yield running


# --- tests --------------------------------------------------------------------------------

FAULTS = {
    "down": {}, "hang": {}, "error": {},
    "slow": {"latency_ms": 400}, "flaky": {"error_rate": 0.5}, "ambiguous": {},
}
TRIPPING = ("down", "hang", "error")


@pytest.mark.parametrize("mode", list(FAULTS))
def test_fault_mode_answers_in_time_and_queued_claims_end_accepted_once(
    stack: Stack, mode: str,
) -> None:
    assert board(stack.url, stack.auth)["state"] == "closed"
    set_fault(stack.simulator, mode, **FAULTS[mode])
    answers: list[Answer] = []
    with httpx.Client(base_url=stack.url, headers=stack.auth, timeout=10) as client:
        count = TIMINGS["breaker_fail_max"] if mode in TRIPPING else 8
        for invoice in invoices(f"{mode[:3].upper()}A", int(count)):  # type: ignore[call-overload]
            answers.append(submit(client, invoice))
    assert_within_deadline(answers)

    if mode in TRIPPING:
        assert all(a.status == 202 and a.body["status"] == "queued" for a in answers)
        row = board(stack.url, stack.auth)
        assert row["state"] == "open", row
        # Let one trial fail: the breaker opens again for >= 1.6 s (2nd trip: 2 s ± 20 %).
        # Then the operator is back, but the breaker stays open until its next trial: claims
        # arriving now are queued at once and never reach it.
        trials = ledger(stack.simulator, health=True)["health"]
        wait_for("a failed trial", lambda: ledger(stack.simulator, health=True)["health"]
                 > trials and board(stack.url, stack.auth)["state"] == "open", timeout=5)
        set_fault(stack.simulator, "ok")
        before = ledger(stack.simulator, health=True)
        burst = submit_all(stack.url, stack.auth, invoices(f"{mode[:3].upper()}B", 20))
        after = ledger(stack.simulator, health=True)
        # Only a successful /health trial closes the breaker: none meanwhile, so it stayed
        # open during the whole burst and the checks below mean what they say.
        assert (after["health"], board(stack.url, stack.auth)["state"]) == (
            before["health"], "open"), "a trial ran during the burst: inconclusive"
        assert_within_deadline(burst)
        assert [a.status for a in burst] == [202] * 20, [a.body for a in burst]
        assert {a.body["status"] for a in burst} == {"queued"}
        assert after["received"] == before["received"]
        answers += burst
    else:
        set_fault(stack.simulator, "ok")

    wait_for("breaker closed by the probe",
             lambda: board(stack.url, stack.auth)["state"] == "closed", timeout=5)
    ids = [a.body["id"] for a in answers]
    claims = wait_all_accepted(stack.url, stack.auth, ids, timeout=20)
    entries = ledger(stack.simulator)["claims"]
    assert_each_sent_once(entries, ids, ambiguous=mode == "ambiguous")
    if mode == "ambiguous":
        # The operator recorded each claim whose answer was lost: the drain found it by a
        # lookup and did not send it again.
        lost = {i for i, c in claims.items() if any("http-504" in (h["detail"] or "")
                                                     for h in c["history"])}
        assert lost, [c["history"] for c in claims.values()]
        found = [(e["count"], e["lookups"]) for e in entries if e["key"] in lost]
        assert found == [(1, 1)] * len(lost), found


def test_half_open_trial_is_one_probe_while_claims_keep_coming(stack: Stack) -> None:
    set_fault(stack.simulator, "hang")  # every trial fails after the probe's timeout
    wait_for("the prober opens the breaker",
             lambda: board(stack.url, stack.auth)["state"] == "open", timeout=5)
    opened_at = time.time()
    states: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=stack.url, headers=stack.auth, timeout=5) as client:
            while not stop.is_set():
                row = next(r for r in client.get("/v1/operators").json() if r["name"] == "opera")
                states.append(row["state"])
                time.sleep(0.03)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    answers: list[Answer] = []

    def trials() -> list[float]:
        return [t for t in ledger(stack.simulator, health=True)["health_at"] if t >= opened_at]

    try:
        # 20 concurrent claims every ~0.25 s until two trials have run (bounded).
        for wave in range(24):
            started = time.monotonic()
            answers += submit_all(stack.url, stack.auth, invoices(f"HO{wave:02d}", 20))
            if len(trials()) >= 2 and wave >= 3:
                break
            time.sleep(max(0.0, 0.25 - (time.monotonic() - started)))
    finally:
        stop.set()
        watcher.join(timeout=10)
    ended_at = time.time()

    assert_within_deadline(answers)
    assert {a.body["status"] for a in answers} == {"queued"}
    calls = [t for t in trials() if t <= ended_at]
    # Open for breaker_reset_s..breaker_reset_max_s (±20 %) between trials, and each trial is
    # one probe, never one per waiting claim.
    assert len(calls) >= 2, calls
    gaps = [round(b - a, 3) for a, b in zip(calls, calls[1:], strict=False)]
    assert min(gaps) >= 0.7, f"more than one /health call in a trial: gaps {gaps}"
    assert "half_open" in states, "no half-open trial observed"
    with httpx.Client(base_url=stack.url, headers=stack.auth, timeout=5) as client, \
            ThreadPoolExecutor(10) as pool:
        details = list(pool.map(lambda a: client.get(f"/v1/claims/{a.body['id']}").json(),
                                answers))
    # Queued at once: never `pending` (being sent), and no failed attempt.
    sent = [d["id"] for d in details if {h["status"] for h in d["history"]} != {"queued"}
            or any("attempt" in (h["detail"] or "") for h in d["history"])]
    assert sent == [], f"claims tried while the breaker was not closed: {sent[:5]}"
    during_trial = [d for d in details if "half_open" in d["history"][0]["detail"]]
    assert during_trial, "no claim arrived during a half-open trial"



def test_one_outage_is_one_trip_whatever_the_calls_in_flight(stack: Stack) -> None:
    """Calls already in flight when the breaker trips must not re-open it, each one counting
    as a repeated trip (the open time would jump to breaker_reset_max_s)."""
    set_fault(stack.simulator, "hang")
    answers = submit_all(stack.url, stack.auth, invoices("TRIP", 10), concurrency=10)
    assert_within_deadline(answers)
    opened = wait_for("breaker open", lambda: (row := board(stack.url, stack.auth))["state"]
                      == "open" and row, timeout=5, interval=0.02)
    set_fault(stack.simulator, "ok")
    closed = wait_for("breaker closed", lambda: (row := board(stack.url, stack.auth))["state"]
                      == "closed" and row, timeout=5, interval=0.02)
    open_for = _seconds(closed["state_since"]) - _seconds(opened["state_since"])
    # First trip: open for breaker_reset_s (1 s) ± 20 %, then one quick trial. A second trip
    # would be 2 s ± 20 %.
    assert open_for < 1.5, f"open for {open_for:.2f} s after a single outage"


def _seconds(instant: str) -> float:
    return datetime.fromisoformat(instant).timestamp()
