"""PostgreSQL restarted while three pharmacies submit claims steadily: the gateway answers
503 `database-unavailable` (never 500) while it is down, `/readyz` follows the database,
and nothing is lost or sent twice blindly (CONTRACT.md 3.1, 4).

`gateway serve` runs on a private PostgreSQL cluster (tests/e2e/private_postgres.py); the
simulated operator is healthy but takes OPERATOR_LATENCY_MS to answer, so that the stop
(fast mode: open sessions cut off) catches a claim stored `pending` whose answer can no
longer be written. After a few seconds the cluster starts again. Every claim left without
a 2xx is then retried with its key and body: it must be stored within deadline_s + the
5 s lease grace (+ a margin) after the database is back, the operator must have received
each invoice once (again only after a lookup), every claim must end accepted, and the log
must tell the outage once, without a traceback.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from private_postgres import PrivatePostgres, private_postgres
from procs import free_port, output, wait_http
from synthetic import claim_body
from test_e2e_resilience import (
    OPERATIONS_OF,
    assert_each_sent_once,
    claim_of,
    gateway_proc,
    ledger,
    set_fault,
    simulator_proc,
    wait_all_accepted,
    wait_for,
    write_gateway_config,
)

from gateway.keys.admin import create_key
from gateway.settings import load_settings
from gateway.storage.migrate import upgrade

pytestmark = pytest.mark.slow
PHARMACIES = ("330001231", "690000880", "130000003")  # distinct FINESS, valid Luhn keys
OPERATOR = {"timeout_s": 1.5, "deadline_s": 2.0}  # room for the latency below
OPERATOR_LATENCY_MS = 400
IN_OPERATOR_S = (0.1, 0.2)  # a request this old is past its store, at the operator
PACE_S = 0.2  # between two claims of one pharmacy
LEASE_GRACE_S = 5.0  # gateway.claims: a first request may answer until deadline_s + this
DOWN_S = LEASE_GRACE_S + 1  # the database stays stopped this long
RETRY_MARGIN_S = 3.0
ANSWER_MARGIN_S = 1.5  # client side: HTTP, the writes around the operator call
REQUEST_TIMEOUT_S = 10.0
MAX_CLAIMS_PER_PHARMACY = 300  # bounds each submitting loop whatever happens
# A traceback or a driver error as text ("(psycopg.OperationalError) connection failed"),
# not a structured event naming its type ("error": "OperationalError").
RAW_ERROR = re.compile(r"Traceback|OperationalError[):]|sqlalchemy\.exc")


@dataclass
class Reply:
    status: int | None  # None: transport error or timeout
    body: dict[str, Any]
    headers: dict[str, str]
    error: str = ""
    sent: float = 0.0  # monotonic
    elapsed: float = 0.0


@dataclass
class Submission:
    finess: str
    key: str
    body: dict[str, Any]
    replies: list[Reply] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        return any(r.status in (201, 202) for r in self.replies)


@dataclass
class Outage:
    down_s: float  # stop -> /readyz 200 again
    ready_at: float  # monotonic
    readyz_while_down: list[int | None]


def pharmacy_keys(config: Path) -> dict[str, dict[str, str]]:
    """Migrate, then one key per pharmacy (and an operations key for the board)."""
    settings = load_settings(config)
    upgrade(settings.database_url)
    _, operations = create_key(settings, role="operations", label="e2e board")
    keys = {}
    for finess in PHARMACIES:
        _, secret = create_key(settings, role="pharmacy", finess=finess, label="e2e")
        keys[finess] = {"Authorization": f"Bearer {secret}"}
        OPERATIONS_OF[keys[finess]["Authorization"]] = {"Authorization": f"Bearer {operations}"}
    return keys


def post(client: httpx.Client, submission: Submission) -> Reply:
    sent = time.monotonic()
    try:
        response = client.post("/v1/claims", json=submission.body,
                               headers={"Idempotency-Key": submission.key})
    except httpx.TransportError as exc:
        return Reply(None, {}, {}, type(exc).__name__, sent, time.monotonic() - sent)
    json_body = response.headers.get("content-type", "").endswith("json")
    body = response.json() if json_body else {"text": response.text[:300]}
    return Reply(response.status_code, body, dict(response.headers), "", sent,
                 time.monotonic() - sent)


class Tills:
    """Each pharmacy's till submits a new claim (its own key) every PACE_S in a thread."""

    def __init__(self, url: str, keys: dict[str, dict[str, str]]) -> None:
        self.url, self.keys = url, keys
        self.done: list[Submission] = []
        # the request under way at each till (a fixed set of keys: read from another thread)
        self.busy: dict[str, tuple[float, Submission] | None] = dict.fromkeys(PHARMACIES)
        self.stop = threading.Event()

    def run(self, finess: str) -> None:
        with httpx.Client(base_url=self.url, headers=self.keys[finess],
                          timeout=REQUEST_TIMEOUT_S) as client:
            for n in range(MAX_CLAIMS_PER_PHARMACY):
                if self.stop.is_set():
                    return
                submission = Submission(finess, f"dbr-{finess}-{n:04d}",
                                        claim_body(f"DBR{n:05d}", finess=finess, person=n % 3))
                self.busy[finess] = (time.monotonic(), submission)
                submission.replies.append(post(client, submission))
                self.busy[finess] = None
                self.done.append(submission)
                self.stop.wait(PACE_S)

    def stored(self) -> int:
        return sum(s.stored for s in list(self.done))

    def in_operator(self) -> Submission | None:
        """A claim whose request is at the operator, its answer >= 0.2 s away."""
        now, (low, high) = time.monotonic(), IN_OPERATOR_S
        under_way = [entry for entry in self.busy.values() if entry is not None]
        return next((s for since, s in under_way if low < now - since < high), None)


@contextmanager
def tills_running(url: str, keys: dict[str, dict[str, str]]) -> Iterator[Tills]:
    tills = Tills(url, keys)
    threads = [threading.Thread(target=tills.run, args=(f,), daemon=True) for f in PHARMACIES]
    for thread in threads:
        thread.start()
    try:
        yield tills
    finally:
        tills.stop.set()
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 5)


def readyz(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.TransportError:
        return None


def restart_database(pg: PrivatePostgres, url: str) -> Outage:
    """Stop the cluster, keep it down DOWN_S (watching /readyz), start it, wait for ready."""
    pg.stop()
    down_at = time.monotonic()
    seen: list[int | None] = []
    while time.monotonic() - down_at < DOWN_S:
        seen.append(readyz(url))
        time.sleep(0.2)
    pg.start()
    wait_for("/readyz 200 once the database is back", lambda: readyz(url) == 200, timeout=20,
             interval=0.1)
    ready_at = time.monotonic()
    return Outage(ready_at - down_at, ready_at, seen)


def retry_until_stored(url: str, keys: dict[str, dict[str, str]],
                       submissions: list[Submission], outage: Outage) -> None:
    """Send each claim left without a 2xx again, same key and body, until 201/202, at the
    latest when every lease taken before the outage has ended (plus a margin)."""
    deadline = outage.ready_at + OPERATOR["deadline_s"] + LEASE_GRACE_S + RETRY_MARGIN_S
    clients = {f: httpx.Client(base_url=url, headers=a, timeout=REQUEST_TIMEOUT_S)
               for f, a in keys.items()}
    try:
        while (waiting := [s for s in submissions if not s.stored]):
            assert time.monotonic() < deadline, (
                f"{len(waiting)} claims still not stored at deadline_s + lease grace + "
                f"margin after the database came back; last replies: "
                f"{[_brief(s.replies[-1]) for s in waiting[:5]]}")
            # at once: a new claim takes the operator's latency, the others need not wait
            with ThreadPoolExecutor(min(len(waiting), 10)) as pool:
                for submission, reply in zip(waiting, pool.map(
                        lambda s: post(clients[s.finess], s), waiting), strict=True):
                    submission.replies.append(reply)
            time.sleep(0.25)
    finally:
        for client in clients.values():
            client.close()


def _brief(reply: Reply) -> tuple[object, ...]:
    """Status, problem type or claim status, detail: enough to tell an answer."""
    return (reply.status, reply.error or reply.body.get("type") or reply.body.get("status"),
            reply.body.get("detail"))


def allowed(reply: Reply, retry: bool) -> bool:
    """2xx, 503 database-unavailable (problem+json, Retry-After), 409 in-flight on a retry,
    or no answer at all: anything else (a 500 first of all) is a defect."""
    kind, headers = str(reply.body.get("type", "")), reply.headers
    if reply.status == 503:
        return (kind.endswith("database-unavailable") and "retry-after" in headers
                and headers.get("content-type", "").startswith("application/problem+json"))
    return reply.status in (None, 201, 202) or (
        retry and reply.status == 409 and kind.endswith("in-flight"))


def assert_answers_were_allowed(submissions: list[Submission]) -> None:
    wrong = [(s.key, n, r.status, r.headers.get("content-type"), r.body)
             for s in submissions for n, r in enumerate(s.replies) if not allowed(r, n > 0)]
    assert wrong == [], f"{len(wrong)} answers not allowed, first ones: {wrong[:5]}"


def assert_lease_respected(submissions: list[Submission]) -> None:
    """A claim's first request answers before its lease (deadline_s + grace) ends, and a
    retry is told 409 in-flight only until then: after that it takes the claim over."""
    bound = OPERATOR["deadline_s"] + LEASE_GRACE_S + ANSWER_MARGIN_S
    late = [(s.key, _brief(r), round(r.elapsed, 2))
            for s in submissions for r in s.replies if r.elapsed > bound]
    assert late == [], f"answers later than {bound} s: {late[:5]}"
    stale = []
    for submission in submissions:
        for n, reply in enumerate(submission.replies[1:], 1):
            # the claim was stored at the latest by the last request not told 409
            creator = next(r for r in reversed(submission.replies[:n]) if r.status != 409)
            if reply.status == 409 and reply.sent - creator.sent > bound:
                stale.append((submission.key, round(reply.sent - creator.sent, 2)))
    assert stale == [], f"409 in-flight more than {bound} s after the first request: {stale}"


def assert_one_claim_per_key(url: str, keys: dict[str, dict[str, str]],
                             submissions: list[Submission]) -> list[str]:
    """Every 2xx answer of a key names one claim, and that claim can be read back."""
    ids = []
    for submission in submissions:
        named = {r.body["id"] for r in submission.replies if r.status in (201, 202)}
        assert len(named) == 1, (submission.key, named)
        ids.append(named.pop())
        assert claim_of(url, keys[submission.finess], ids[-1])["id"] == ids[-1]
    assert len(set(ids)) == len(ids), "two keys answered with the same claim"
    return ids


def logged_events(text: str, event: str) -> int:
    return len(re.findall(rf'"event":\s*"{re.escape(event)}"', text))


def statuses(replies: list[Reply]) -> dict[str, int]:
    return dict(Counter(str(r.status or r.error) for r in replies))


def test_postgres_restart_under_steady_submissions_loses_nothing_and_never_answers_500(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    sim_port, gw_port = free_port(), free_port()
    simulator, url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    with private_postgres() as pg, ExitStack() as stack:
        config = write_gateway_config(tmp_path, simulator, port=gw_port, database_url=pg.url,
                                      **OPERATOR)
        keys = pharmacy_keys(config)
        sim = stack.enter_context(simulator_proc(tmp_path, sim_port))
        wait_http(f"{simulator}/health", sim, tmp_path, "sim")
        set_fault(simulator, "ok", latency_ms=OPERATOR_LATENCY_MS)
        stack.enter_context(gateway_proc(tmp_path, config, gw_port))

        with tills_running(url, keys) as tills:
            wait_for("claims stored before the outage", lambda: tills.stored() >= 6, timeout=20)
            caught = wait_for("a claim at the operator", tills.in_operator, timeout=10,
                              interval=0.01)
            outage = restart_database(pg, url)
            back = tills.stored()
            retried = [s for s in list(tills.done) if not s.stored]
            retry_until_stored(url, keys, retried, outage)
            wait_for("claims stored after the outage", lambda: tills.stored() >= back + 3,
                     timeout=20)
        submissions = tills.done
        late = [s for s in submissions if not s.stored]  # failed while the first were retried
        retry_until_stored(url, keys, late, outage)
        all_stored_s = max(next(r.sent + r.elapsed for r in s.replies if r.status in (201, 202))
                           for s in retried + late) - outage.ready_at
        print(f"\n{len(submissions)} claims from {len(PHARMACIES)} pharmacies; first answers "
              f"{statuses([s.replies[0] for s in submissions])}; database down "
              f"{outage.down_s:.1f} s (stop -> /readyz 200), /readyz while down "
              f"{dict(Counter(outage.readyz_while_down))}\n{len(retried + late)} retried, "
              f"answers to retries {statuses([r for s in retried + late for r in s.replies[1:]])}"
              f"; the claim caught at the operator: {[_brief(r)[:2] for r in caught.replies]}; "
              f"all stored {all_stored_s:.1f} s after /readyz 200")
        assert 503 in outage.readyz_while_down, outage  # and 200 since: restart_database
        # Down longer than the lease grace: the claim caught at the operator cannot wait
        # the outage out; its request answers (503) before its lease ends, never later.
        assert caught.replies[0].status not in (201, 202), f"not caught: {caught}"
        assert_lease_respected(submissions)
        assert_answers_were_allowed(submissions)
        ids = assert_one_claim_per_key(url, keys, submissions)
        for finess in PHARMACIES:
            mine = [i for s, i in zip(submissions, ids, strict=True) if s.finess == finess]
            wait_all_accepted(url, keys[finess], mine, timeout=30)
        assert_each_sent_once(ledger(simulator)["claims"], ids, ambiguous=True)

    log = output(tmp_path, "gw")
    unavailable = logged_events(log, "database.unavailable")
    print(f"database.unavailable logged {unavailable}x, database.recovered "
          f"{logged_events(log, 'database.recovered')}x; test {time.monotonic() - started:.1f} s")
    raw = RAW_ERROR.search(log)
    assert raw is None, log[max(0, raw.start() - 1500):raw.end() + 1500]
    assert 1 <= unavailable <= 2, f"{unavailable} database.unavailable events"
