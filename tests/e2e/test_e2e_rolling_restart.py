"""SIGTERM under load loses no claim and leaves none half-sent (a rolling restart; CONTRACT.md
3.1, 4 and gateway/web/serving.py).

`gateway serve` on SQLite with `shutdown_delay_s = 3`: operator "opera" slow (so synchronous
claims are in progress) and draining a queue while client threads keep submitting, and
operator "operb" holding one claim past the end of the delay. SIGTERM to the process alone:
requests in progress are answered (or their claims wait in the queue), requests sent
afterwards get 503 `shutting-down` (or a refused connection once the listener is closed),
/readyz is 503 during the delay, the process exits by itself and leaves no claim `pending`.
A restart ends every claim accepted, each sent once or again only after a lookup; a request
that got no answer, retried with its key, finds its claim.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, closing
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from procs import dev_config, free_port, operator_toml, spawn, wait_http
from test_e2e_kill_points import claim_row, instant, retry_until_settled
from test_e2e_resilience import (
    TIMINGS,
    assert_each_sent_once,
    board,
    claim_of,
    gateway_proc,
    invoices,
    ledger,
    pharmacy_auth,
    set_fault,
    submit_all,
    wait_all_accepted,
    wait_for,
)

from gateway.demo.samples import sample_claim

pytestmark = pytest.mark.slow
SHUTDOWN_DELAY_S = 3
DEADLINE_S = 2.0
OPERATOR = {"timeout_s": 1.5, "deadline_s": DEADLINE_S, "drain_per_s": 5}
LONG = {"timeout_s": 5.0, "deadline_s": 6.0}  # operb: queued after 5 s, past the delay
QUEUED = 60  # at 5/s, still draining when the process exits
CLIENTS, PER_CLIENT = 6, 80  # bounded load
GRACE_S = 0.5  # the signal reaching the process's loop; a send recorded just before it
EXIT_BOUND_S = SHUTDOWN_DELAY_S + 6 + 5 + 10  # delay, graceful timeout (deadline + 5), slack
RESTART_WAIT_S = 40


@dataclass
class Sent:
    """One request and what came of it (`status` None: a transport error named `error`)."""

    invoice: str
    sent_at: float
    done_at: float = 0.0
    status: int | None = None
    body: dict[str, Any] | None = None
    headers: dict[str, str] | None = None
    error: str = ""

    @property
    def key(self) -> str:
        return f"rr-{self.invoice}"


def write_config(cwd: Path, simulators: tuple[str, str], port: int,
                 **operator: object) -> Path:
    """Operator "opera" (slow, draining its queue) and "operb" (holding one long claim),
    with the shutdown delay as a top-level key."""
    config = cwd / "gw.toml"
    config.write_text(f"shutdown_delay_s = {SHUTDOWN_DELAY_S}\n" + dev_config(
        operator_toml("opera", simulators[0], ["80*"], **{**TIMINGS, **OPERATOR, **operator})
        + "\n" + operator_toml("operb", simulators[1], ["81*"], **{**TIMINGS, **LONG}),
        database_url=f"sqlite:///{cwd / 'gateway.db'}", data_dir=str(cwd / "var"),
        public_url=f"http://127.0.0.1:{port}",
    ))
    return config


def long_claim(url: str, auth: dict[str, str]) -> Sent:
    """A synchronous claim to "operb", which holds it: in progress past the listener's close."""
    one = Sent("RRLONG", time.time())
    body = sample_claim(one.invoice)
    body["amc"]["insurer_number"] = "811234567"  # type: ignore[index]
    response = httpx.post(f"{url}/v1/claims", json=body, timeout=30,
                          headers={**auth, "Idempotency-Key": one.key})
    one.status, one.body, one.done_at = response.status_code, response.json(), time.time()
    return one


def submit_in_a_loop(url: str, auth: dict[str, str], prefix: str, stop: threading.Event,
                     sent: list[Sent]) -> None:
    """One pharmacy's software: a new connection per request (a keep-alive connection the
    server closes would blur what was refused), until told to stop or refused."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=url, headers=auth, timeout=15, limits=limits) as client:
        for invoice in invoices(prefix, PER_CLIENT):
            if stop.is_set():
                return
            one = Sent(invoice, time.time())
            sent.append(one)
            try:
                response = client.post("/v1/claims", json=sample_claim(invoice),
                                       headers={"Idempotency-Key": one.key})
                one.status, one.headers = response.status_code, dict(response.headers)
                one.body = response.json()
            except httpx.TransportError as exc:
                one.error = type(exc).__name__
                if isinstance(exc, httpx.ConnectError):
                    return  # the listener is closed
            finally:
                one.done_at = time.time()
            time.sleep(0.1)


def poll_readyz(url: str, stop: threading.Event, seen: list[tuple[float, int | None]]) -> None:
    while not stop.is_set():
        at = time.time()
        try:
            seen.append((at, httpx.get(f"{url}/readyz", timeout=5).status_code))
        except httpx.TransportError:
            seen.append((at, None))
        time.sleep(0.1)


def status_counts(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as ro:
        return dict(ro.execute("SELECT status, count(*) FROM claims GROUP BY status"))


def claim_ids(db: Path, operator: str) -> list[str]:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as ro:
        return [row[0] for row in ro.execute("SELECT id FROM claims WHERE operator = ?",
                                             (operator,))]


def assert_refused_as_shutting_down(one: Sent) -> None:
    assert one.body is not None and one.headers is not None
    assert one.body["type"].endswith("shutting-down"), one.body
    assert "retry-after" in one.headers, one.headers
    assert one.headers.get("connection") == "close", one.headers


def check_answers(sent: list[Sent], t_term: float, db: Path) -> list[Sent]:
    """What each request got, by when it was sent; the ones left without an answer."""
    unanswered: list[Sent] = []
    for one in sent:
        stored = claim_row(db, one.invoice)
        if one.status == 503:
            assert_refused_as_shutting_down(one)
            assert stored is None, f"refused but stored: {one.invoice} {stored}"
        elif one.status is not None:
            assert one.status in (201, 202), (one.status, one.body)
            assert one.sent_at < t_term + GRACE_S, f"accepted after SIGTERM: {one}"
        elif one.error == "ConnectError":
            assert one.sent_at > t_term, f"refused before SIGTERM: {one}"
            assert stored is None, stored
        elif stored is None:  # closed by the listener's shutdown before it was read
            assert one.sent_at > t_term, f"dropped before SIGTERM: {one}"
        else:  # in progress when the process stopped: the claim waits in the queue
            assert stored["status"] == "queued", (one, stored)
            unanswered.append(one)
    return unanswered


def test_sigterm_under_load_answers_or_queues_everything_then_restart_settles_all(
    tmp_path: Path,
) -> None:
    ports = free_port(), free_port(), free_port()
    sims = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    url = f"http://127.0.0.1:{ports[2]}"
    config = write_config(tmp_path, sims, ports[2])
    auth = pharmacy_auth(config)
    db = tmp_path / "gateway.db"
    sent: list[Sent] = []
    readyz: list[tuple[float, int | None]] = []
    stop = threading.Event()

    with ExitStack() as stack:
        for name, port, sim_url in (("opera", ports[0], sims[0]), ("operb", ports[1], sims[1])):
            sim = stack.enter_context(spawn("simulator", "--port", str(port), "--name", name,
                                            cwd=tmp_path, name=name))
            wait_http(f"{sim_url}/health", sim, tmp_path, name)
        with gateway_proc(tmp_path, config, ports[2], name="gw1") as first, \
                ThreadPoolExecutor(1) as pool:
            set_fault(sims[0], "down")
            wait_for("the prober opens the breaker",
                     lambda: board(url, auth)["state"] == "open", timeout=10)
            queued = submit_all(url, auth, invoices("RRQ", QUEUED))
            assert {(a.status, a.body["status"]) for a in queued} == {(202, "queued")}
            set_fault(sims[0], "slow", latency_ms=300)
            set_fault(sims[1], "hold")
            wait_for("the drain under way", lambda: ledger(sims[0])["received"] >= 3,
                     timeout=15, interval=0.05)

            threads = [threading.Thread(target=submit_in_a_loop,
                                        args=(url, auth, f"RR{n}", stop, sent))
                       for n in range(CLIENTS)]
            threads.append(threading.Thread(target=poll_readyz, args=(url, stop, readyz)))
            for thread in threads:
                thread.start()
            try:
                wait_for("synchronous claims answered",
                         lambda: sum(s.status == 201 for s in sent) >= CLIENTS, timeout=15)
                held = pool.submit(long_claim, url, auth)
                wait_for("operb holds its claim", lambda: ledger(sims[1])["received"] == 1,
                         timeout=10)
                # the clients' answers come out of one group commit together, so they may
                # all be between two requests: stop while one is surely being sent (read,
                # and inside the operator's 300 ms)
                wait_for("a claim in progress", lambda: any(
                    not s.done_at and time.time() - s.sent_at > 0.1 for s in list(sent)),
                    timeout=10, interval=0.01)
                t_term = time.time()
                os.kill(first.pid, signal.SIGTERM)  # the process alone, not its group
                code = first.wait(timeout=EXIT_BOUND_S)
                exited_after = time.time() - t_term
                at_exit = status_counts(db)  # right after exit, before anything else
                long = held.result(timeout=5)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=20)
        outcomes = Counter(str(s.status or s.error) for s in sent)
        errors = [(s.error, round(s.sent_at - t_term, 2)) for s in sent if s.error]
        print(f"exit {code} after {exited_after:.1f} s; at exit {at_exit}; requests "
              f"{dict(outcomes)}; transport errors (s after SIGTERM) {errors}"
              f"; long claim {long.status} after {long.done_at - t_term:.1f} s")
        assert code in (0, -signal.SIGTERM), code  # uvicorn re-raises the signal it caught

        assert at_exit.get("pending", 0) == 0, f"claims left pending by the stopped process: " \
                                               f"{at_exit}"
        assert at_exit.get("queued", 0) > 1, f"the drain had ended: inconclusive {at_exit}"
        in_progress = [s for s in sent if s.sent_at < t_term < s.done_at]
        assert [s for s in in_progress if s.status in (201, 202)], "none in progress: inconclusive"
        unanswered = check_answers(sent, t_term, db)
        assert any(s.status == 503 for s in sent), "no request during the delay: inconclusive"
        assert [at for at, st in readyz if at < t_term and st == 200], "never ready before"
        assert [st for at, st in readyz if at > t_term + GRACE_S and st == 200] == []
        assert [at for at, st in readyz if st == 503 and at > t_term + SHUTDOWN_DELAY_S - 1], \
            "/readyz was not 503 through the delay"
        # operb's claim was in progress when the listener closed, and still got its answer
        refused = [s.sent_at for s in sent if s.error == "ConnectError"]
        assert refused and min(refused) < long.done_at, "it ended before the listener closed"
        assert (long.status, long.body["status"]) == (202, "queued"), long.body  # type: ignore[index]

        set_fault(sims[0], "ok")
        set_fault(sims[1], "ok")
        write_config(tmp_path, sims, ports[2], drain_per_s=100)
        with gateway_proc(tmp_path, config, ports[2], name="gw2"):
            for one in unanswered:
                row = claim_row(db, one.invoice)
                assert row is not None
                lease_end = instant(row["created_at"]) + timedelta(seconds=DEADLINE_S + 5)
                retry_until_settled(url, auth, one.key, sample_claim(one.invoice), lease_end,
                                    timeout=RESTART_WAIT_S)
            ids = claim_ids(db, "opera")
            wait_all_accepted(url, auth, ids, timeout=RESTART_WAIT_S)
            long_id = long.body["id"]  # type: ignore[index]
            wait_for("operb's claim settled", lambda: claim_of(url, auth, long_id)["status"]
                     == "accepted", timeout=RESTART_WAIT_S, interval=0.2)
            entries = {name: ledger(sim_url)["claims"] for name, sim_url in zip(
                ("opera", "operb"), sims, strict=True)}
    assert_each_sent_once(entries["opera"], ids, ambiguous=True)
    assert [(e["key"], e["count"]) for e in entries["operb"]] == [(long_id, 1)]
    assert entries["operb"][0]["lookups"] >= 1, "resent without a lookup"
    print(f"{len(ids) + 1} claims; {len(unanswered)} unanswered then found")
