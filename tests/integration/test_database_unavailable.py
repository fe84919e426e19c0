"""A database that refuses writes is a 503 the pharmacy may retry, never a 500 or half a claim.

The gateway's own connections are made to fail by the database itself:
- full: SQLite's `PRAGMA max_page_count` capped at the file's size, so an insert that
  needs a new page fails with SQLITE_FULL ("database or disk is full") in the middle
  of the group commit's transaction, which SQLite then rolls back whole;
- read-only: SQLite's `PRAGMA query_only`, every write fails with SQLITE_READONLY;
- unreachable (PostgreSQL): new connections go to a port nobody listens on.
While that lasts `POST /v1/claims` answers 503 `database-unavailable` with Retry-After
and stores nothing; once lifted, the same request (same key) is stored, sent once and
answered 201, `/readyz` is 200, and the log tells the outage: once, its start and end,
where every write was refused.
"""

from __future__ import annotations

import copy
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from simulator_control import ledger
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from structlog.testing import capture_logs
from synthetic import claim_body

from gateway.storage.db import is_sqlite

pytestmark = pytest.mark.anyio
LINES = 40  # a payload of ~8 KB: its insert needs overflow pages, so pages the cap refuses
# Under the page cap a write that fits in pages already there still succeeds (the
# readiness probe's one-row update does): only these faults refuse every write.
EVERY_WRITE_REFUSED = {"read-only", "unreachable"}


def big_claim(invoice: str) -> dict[str, Any]:
    """A claim whose encrypted payload spans several pages."""
    body = claim_body(invoice)
    body["lines"] = [copy.deepcopy(body["lines"][0]) for _ in range(LINES)]
    return body


def closed_port() -> int:
    """A port nobody listens on (bound, then let go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vacuum(engine: Engine) -> None:
    """No free page left in the file: under the cap, new rows need the file to grow."""
    connection = sqlite3.connect(make_url(str(engine.url)).database, isolation_level=None)
    try:
        connection.execute("VACUUM")
    finally:
        connection.close()


@contextmanager
def on_new_connections(engine: Engine, name: str, listener: Any) -> Iterator[None]:
    """`listener` on the engine's `name` event while inside; the pool is emptied on entry
    and exit so that the gateway's next unit of work opens a connection with it, or without."""
    event.listen(engine, name, listener)
    engine.dispose()
    try:
        yield
    finally:
        event.remove(engine, name, listener)
        engine.dispose()


def outage(engine: Engine, fault: str) -> Any:
    if fault == "unreachable":
        port = closed_port()

        def to_closed_port(_: Any, __: Any, ___: Any, cparams: dict[str, Any]) -> None:
            cparams["host"], cparams["port"] = "127.0.0.1", port

        return on_new_connections(engine, "do_connect", to_closed_port)

    if fault == "full":
        vacuum(engine)

    def refuse_writes(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        if fault == "full":
            pages = cursor.execute("PRAGMA page_count").fetchone()[0]
            cursor.execute(f"PRAGMA max_page_count={pages}")
        else:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return on_new_connections(engine, "connect", refuse_writes)


@pytest.fixture(params=["full", "read-only", "unreachable"])
def fault(request: pytest.FixtureRequest, settings: Any) -> str:
    sqlite = is_sqlite(settings.database_url)
    if (request.param == "unreachable") == sqlite:
        pytest.skip(f"{request.param}: not tried on {'SQLite' if sqlite else 'PostgreSQL'}")
    return str(request.param)


@pytest.fixture
async def http(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sees what a pharmacy would, a 500 included, not the exception."""
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        yield client


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("database-unavailable"), response.json()
    assert int(response.headers["Retry-After"]) > 0


async def claims_of_invoice(http: httpx.AsyncClient, pharmacy: dict[str, str],
                            invoice: str) -> list[dict[str, Any]]:
    page = await http.get("/v1/claims", params={"limit": 200}, headers=pharmacy)
    assert page.status_code == 200, page.text
    return [c for c in page.json()["claims"] if c["invoice_number"] == invoice]


def outage_events(logs: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in logs if e["event"] in ("database.unavailable",
                                                       "database.recovered")]


async def test_a_database_refusing_writes_is_503_then_the_same_request_succeeds(
    app, http, pharmacy, simulators, fault
):
    before = await http.post("/v1/claims", json=claim_body("BEFORE"),
                             headers={**pharmacy, "Idempotency-Key": "before"})
    assert before.status_code == 201, before.text
    request = {"json": big_claim("DOWN1"), "headers": {**pharmacy, "Idempotency-Key": "down-1"}}

    with capture_logs() as logs:
        with outage(app.state.context.db.engine, fault):
            assert_database_unavailable(await http.post("/v1/claims", **request))
            assert_database_unavailable(await http.post("/v1/claims", **request))  # again
            if fault in EVERY_WRITE_REFUSED:
                ready = await http.get("/readyz")
                assert ready.status_code == 503, ready.text
                assert outage_events(logs) == ["database.unavailable"]

        assert await claims_of_invoice(http, pharmacy, "DOWN1") == []  # nothing half-stored
        assert (await ledger(simulators["opera"]))["received"] == 1  # nor sent
        retried = await http.post("/v1/claims", **request)
        assert retried.status_code == 201, retried.text
        assert retried.json()["status"] == "accepted"
        assert "Idempotent-Replayed" not in retried.headers
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text

    events = outage_events(logs)
    if fault in EVERY_WRITE_REFUSED:
        assert events == ["database.unavailable", "database.recovered"], events
    else:  # a write that fitted in the capped file may have ended the outage early
        assert events[0] == "database.unavailable" and events[-1] == "database.recovered", events
    assert not [e for e in logs if e["log_level"] in ("error", "critical")], logs
    assert [c["status"] for c in await claims_of_invoice(http, pharmacy, "BEFORE")] == [
        "accepted"]
    entries = (await ledger(simulators["opera"]))["claims"]
    assert sorted(e["count"] for e in entries) == [1, 1]  # BEFORE and DOWN1, once each
    replay = await http.post("/v1/claims", **request)
    assert replay.status_code == 201 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == retried.json()["id"]
