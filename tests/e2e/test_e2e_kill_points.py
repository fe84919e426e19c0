"""A gateway SIGKILLed at any point of a synchronous claim loses nothing and never sends it
twice blindly (CONTRACT.md 3.1, 4; the replay rule of gateway/claims/service.py).

One claim with an Idempotency-Key goes to `gateway serve` on SQLite; the process is killed
(a) before the operator has the claim, (b) while the operator holds it unanswered, or
(c) after the operator answered but before the answer is recorded (the test holds SQLite's
write lock, so the gateway waits on it). Each landing is checked. A restart on the same file,
the operator healthy, must settle it: accepted, received once by the operator (found by a
lookup, not resent, when it had it). Retrying with the same key and body gets 409 only while
the dead request could still answer (created_at + deadline_s + 5 s), then the claim itself
with `Idempotent-Replayed: true`: 202 while it waits, 201 once accepted.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from procs import free_port, wait_http
from test_e2e_resilience import (
    claim_of,
    gateway_proc,
    ledger,
    pharmacy_auth,
    set_fault,
    simulator_proc,
    wait_for,
    write_gateway_config,
)

from gateway.demo.samples import sample_claim

pytestmark = pytest.mark.slow
DEADLINE_S = 8.0  # long enough for every kill to land before it
OPERATOR = {"timeout_s": 7.0, "deadline_s": DEADLINE_S,
            "probe_interval_s": 60}  # no probe: a `slow` /health would open the breaker
LEASE_S = DEADLINE_S + 5  # LEASE_GRACE_S: the dead request's lease ends then
SETTLE_WAIT_S = LEASE_S + 25  # bound: the lease ends, then a sweep, a lookup, a send
ANSWER_IN_FLIGHT_S = 0.5  # the operator's answer reaches the gateway, which waits on the lock
RETRY_EVERY_S = 0.5


# --- the database, read behind the gateway's back ------------------------------------------

def claim_row(db: Path, invoice: str, conn: sqlite3.Connection | None = None
              ) -> dict[str, Any] | None:
    """The claim with this invoice number, read with sqlite3 (read-only unless `conn`)."""
    query = ("SELECT id, status, created_at, lease_owner, maybe_sent FROM claims"
             " WHERE invoice_number = ?")
    if conn is not None:
        return _as_dict(conn.execute(query, (invoice,)).fetchone(), query)
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as ro:
        return _as_dict(ro.execute(query, (invoice,)).fetchone(), query)


def _as_dict(row: tuple[Any, ...] | None, query: str) -> dict[str, Any] | None:
    if row is None:
        return None
    names = query.split("SELECT ")[1].split(" FROM")[0].split(", ")
    return dict(zip(names, row, strict=True))


def instant(stored: str) -> datetime:
    """A UTC instant as SQLite holds it (no offset)."""
    return datetime.fromisoformat(stored).replace(tzinfo=UTC)


@contextmanager
def write_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """SQLite's write lock, held by the test: every writer of the gateway waits on it."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def status_of(db: Path, invoice: str) -> str | None:
    row = claim_row(db, invoice)
    return row["status"] if row else None


# --- where the kill lands ------------------------------------------------------------------

@dataclass
class Landing:
    db: Path
    simulator: str
    invoice: str
    process: Any

    def kill(self) -> None:
        """SIGKILL on the process itself: no graceful stop, no last write."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=5)

    def wait_pending(self) -> None:
        wait_for("the claim stored, pending", lambda: status_of(self.db, self.invoice)
                 == "pending", timeout=10, interval=0.02)

    def wait_received(self) -> None:
        wait_for("the operator received it", lambda: ledger(self.simulator)["received"] == 1,
                 timeout=10, interval=0.02)


def before_the_operator_has_it(at: Landing) -> None:
    """`hang` holds the request before processing; its sender gone, it is never recorded."""
    at.wait_pending()
    at.kill()
    set_fault(at.simulator, "ok")  # the held request keeps its `hang`: it ends unrecorded
    assert ledger(at.simulator)["received"] == 0


def while_the_operator_holds_it(at: Landing) -> None:
    """`hold` records the claim, then keeps its answer."""
    at.wait_received()
    assert status_of(at.db, at.invoice) == "pending"
    at.kill()
    assert ledger(at.simulator)["received"] == 1


def after_the_answer_before_it_is_recorded(at: Landing) -> None:
    """`slow` answers after its latency; the gateway's write of the answer waits on our
    lock (its busy timeout is 30 s) until the kill."""
    at.wait_pending()
    with write_lock(at.db) as lock:
        at.wait_received()
        time.sleep(ANSWER_IN_FLIGHT_S)
        at.kill()
        at_kill = claim_row(at.db, at.invoice, lock)
    assert at_kill is not None and at_kill["status"] == "pending", at_kill
    assert ledger(at.simulator)["received"] == 1


POINTS: dict[str, tuple[str, dict[str, int], Callable[[Landing], None]]] = {
    "before-operator": ("hang", {}, before_the_operator_has_it),
    "operator-holds": ("hold", {}, while_the_operator_holds_it),
    "answer-unrecorded": ("slow", {"latency_ms": 1500}, after_the_answer_before_it_is_recorded),
}


# --- retries, as pharmacy software would send them -----------------------------------------

def post_claim(url: str, auth: dict[str, str], key: str, body: dict[str, Any]
               ) -> httpx.Response:
    return httpx.post(f"{url}/v1/claims", json=body, timeout=30,
                      headers={**auth, "Idempotency-Key": key})


def check_retry_answer(response: httpx.Response, sent_at: datetime, lease_end: datetime
                       ) -> None:
    """409 in-flight only while the first request may still answer; then the claim."""
    if response.status_code == 409:
        assert response.json()["type"].endswith("in-flight"), response.text
        assert sent_at <= lease_end, f"409 {(sent_at - lease_end).total_seconds():.1f} s " \
                                     f"after the first request's lease ended"
        return
    assert response.status_code in (201, 202), (response.status_code, response.text)
    assert response.headers.get("Idempotent-Replayed") == "true", response.headers
    expected = {"accepted"} if response.status_code == 201 else {"queued", "pending"}
    assert response.json()["status"] in expected, response.text


def retry_until_settled(url: str, auth: dict[str, str], key: str, body: dict[str, Any],
                        lease_end: datetime, timeout: float = SETTLE_WAIT_S,
                        ) -> list[tuple[float, int]]:
    """Retry every RETRY_EVERY_S until 201; each answer checked. (seconds after the lease
    end, status) of each."""
    seen: list[tuple[float, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sent_at = datetime.now(UTC)
        response = post_claim(url, auth, key, body)
        seen.append((round((sent_at - lease_end).total_seconds(), 1), response.status_code))
        check_retry_answer(response, sent_at, lease_end)
        if response.status_code == 201:
            return seen
        time.sleep(RETRY_EVERY_S)
    raise AssertionError(f"not settled within {timeout} s: {seen}")


def wait_settled_by_the_drain(url: str, auth: dict[str, str], claim_id: str) -> None:
    """No retry at all: the drain's sweep finds the expired lease by itself."""
    wait_for("the drain settles it", lambda: claim_of(url, auth, claim_id)["status"]
             == "accepted", timeout=SETTLE_WAIT_S, interval=0.2)


# --- the test ------------------------------------------------------------------------------

@pytest.mark.parametrize("point", list(POINTS))
def test_killed_mid_claim_then_restarted_settles_it_once_and_replays_it(
    tmp_path: Path, point: str,
) -> None:
    mode, extra, land = POINTS[point]
    sim_port, gw_port = free_port(), free_port()
    simulator, url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    config = write_gateway_config(tmp_path, simulator, port=gw_port, **OPERATOR)
    auth = pharmacy_auth(config)
    db = tmp_path / "gateway.db"
    invoice, key = f"KP{point[:8].upper()}", f"retry-{point}"
    body = sample_claim(invoice)

    with simulator_proc(tmp_path, sim_port) as sim, ThreadPoolExecutor(1) as pool:
        wait_http(f"{simulator}/health", sim, tmp_path, "sim")
        with gateway_proc(tmp_path, config, gw_port, name="gw1") as first:
            set_fault(simulator, mode, **extra)
            started = time.monotonic()
            answer = pool.submit(post_claim, url, auth, key, body)
            land(Landing(db, simulator, invoice, first))
            killed_after = time.monotonic() - started
            with pytest.raises(httpx.TransportError):  # the first request never answered
                answer.result(timeout=10)
        assert killed_after < DEADLINE_S, f"killed {killed_after:.1f} s in: after the deadline"
        row = claim_row(db, invoice)
        assert row is not None and row["status"] == "pending", row  # the dead process's lease
        lease_end = instant(row["created_at"]) + timedelta(seconds=LEASE_S)
        set_fault(simulator, "ok")

        with gateway_proc(tmp_path, config, gw_port, name="gw2"):
            if point == "operator-holds":
                wait_settled_by_the_drain(url, auth, row["id"])
                seen = retry_until_settled(url, auth, key, body, lease_end)
                assert [status for _, status in seen] == [201], seen
            else:
                seen = retry_until_settled(url, auth, key, body, lease_end)
            settled = claim_of(url, auth, row["id"])
        entries = ledger(simulator)["claims"]
    print(f"{point}: killed {killed_after:.1f} s in; retries (s after lease end, status) "
          f"{seen}")

    assert settled["status"] == "accepted", settled
    assert [e["key"] for e in entries] == [row["id"]], entries
    entry = entries[0]
    assert entry["count"] == 1, f"sent again: {entry}"
    if point != "before-operator":
        assert entry["lookups"] >= 1, f"settled without asking the operator: {entry}"
