"""Webhooks: the pharmacy's events, in order, signed, retried without skipping, SSRF-guarded."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import uvicorn
from handover_support import acknowledge, give_keys
from sqlalchemy import event as sql_events
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from structlog.testing import capture_logs
from synthetic import OTHER_FINESS, claim_body

from gateway.audit.trail import cli_actor
from gateway.handover.service import Handover
from gateway.settings import WebhookSettings
from gateway.storage.models import Event, WebhookCursor
from gateway.webhooks import repository
from gateway.webhooks.delivery import Backoff
from gateway.webhooks.repository import Pending, webhook_key
from gateway.webhooks.signing import verify
from gateway.webhooks.worker import ready, run_webhooks

pytestmark = pytest.mark.anyio
KEY = bytes(range(100, 132))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
FINESS = "330001231"


class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers scripted statuses."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self.statuses: list[int] = []  # answered first, in order; then 200
        app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}/hook"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))

    async def _handle(self, request: Request) -> Response:
        self.received.append((request.url.path, dict(request.headers), await request.body()))
        status = self.statuses.pop(0) if self.statuses else 200
        return Response(status_code=status, headers={"location": "/elsewhere"})

    def ids(self) -> list[str]:
        return [headers["webhook-id"] for _, headers, _ in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box = Receiver()
    thread = threading.Thread(target=box.server.run, kwargs={"sockets": [box.socket]},
                              daemon=True)
    thread.start()
    while not box.server.started and thread.is_alive():
        threading.Event().wait(0.01)
    yield box
    box.server.should_exit = True
    thread.join(5)


@pytest.fixture
async def start(app) -> AsyncIterator:
    """Start `run_webhooks` for the given entries, fast, once each cursor exists."""
    stopping, tasks = asyncio.Event(), []

    async def _start(*entries: dict) -> object:
        base = app.state.context
        webhooks = [WebhookSettings(**entry) for entry in entries]
        ctx = dataclasses.replace(
            base, settings=base.settings.model_copy(update={"webhooks": webhooks}))
        tasks.append(asyncio.create_task(run_webhooks(
            ctx, stopping, backoff=Backoff(base_s=0.02, cap_s=0.1), poll_s=0.02)))
        for entry in entries:
            await wait_for(lambda e=entry: cursor(app, e))
        return ctx

    yield _start
    stopping.set()
    await asyncio.gather(*tasks)


def hook(url: str, **overrides) -> dict:
    return {"finess": FINESS, "url": url, "secret": SECRET, "allow_private": True, **overrides}


async def cursor(app, entry: dict) -> WebhookCursor | None:
    key = webhook_key(entry["finess"], entry["url"])
    return await app.state.context.db.read(lambda s: s.get(WebhookCursor, key))


async def wait_for(check):
    """Poll `check` for up to 10 s; its first truthy result."""
    for _ in range(500):
        if result := await check():
            return result
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met within 10 s")


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    """How many events each of the workers' reads of their pending events found."""
    found: list[int] = []
    real = repository.pending

    def pending(session, **kwargs):  # type: ignore[no-untyped-def]
        state = real(session, **kwargs)
        found.append(len(state.events) if state is not None else -1)
        return state

    monkeypatch.setattr(repository, "pending", pending)
    return found


async def received(receiver: Receiver, count: int, reads: list[int]) -> None:
    """Wait for `count` requests, then until the worker has read its pending events again
    and found none left: any extra request would have been sent by then."""
    async def enough() -> bool:
        return len(receiver.received) >= count

    await wait_for(enough)
    since = len(reads)

    async def nothing_left() -> bool:
        return 0 in reads[since:]

    await wait_for(nothing_left)


async def submit(client, headers, invoice, **kwargs) -> None:
    response = await client.post("/v1/claims", json=claim_body(invoice, **kwargs),
                                 headers=headers)
    assert response.status_code in (201, 202), response.text


async def feed(client, headers) -> list[dict]:
    return (await client.get("/v1/events", headers=headers)).json()["events"]


async def test_events_arrive_in_order_signed_with_ids_only(app, client, pharmacy, receiver,
                                                           start, reads):
    await submit(client, pharmacy, "W0")  # before the webhook existed: read it from the feed
    await start(hook(receiver.url))
    for invoice in ("W1", "W2"):
        await submit(client, pharmacy, invoice)
    await submit(client, pharmacy, "W3", member_number="REJ42")
    events = (await feed(client, pharmacy))[1:]
    assert [e["type"] for e in events] == ["claim.accepted", "claim.accepted", "claim.rejected"]
    await received(receiver, 3, reads)
    assert receiver.ids() == [e["id"] for e in events]
    for (path, headers, body), event in zip(receiver.received, events, strict=True):
        verify(KEY, headers, body)
        assert path == "/hook" and headers["content-type"] == "application/json"
        assert json.loads(body) == {"type": event["type"], "timestamp": event["at"],
                                    "data": {"id": event["id"], "claim_id": event["claim_id"]}}
        datetime.fromisoformat(json.loads(body)["timestamp"])


async def test_failures_are_retried_with_the_same_id_and_nothing_is_skipped(
        app, client, pharmacy, receiver, start, reads):
    receiver.statuses = [500, 500]
    entry = hook(receiver.url)
    await start(entry)
    await submit(client, pharmacy, "F1")
    await submit(client, pharmacy, "F2")
    await received(receiver, 4, reads)
    first, second = [e["id"] for e in await feed(client, pharmacy)]
    assert receiver.ids() == [first, first, first, second]
    for _, headers, body in receiver.received:
        verify(KEY, headers, body)
    state = await cursor(app, entry)
    assert (state.attempts, state.last_error, state.next_attempt_at) == (0, None, None)


async def test_a_redirect_is_a_failure_and_is_not_followed(app, client, pharmacy, receiver,
                                                           start, reads):
    receiver.statuses = [307]
    await start(hook(receiver.url))
    await submit(client, pharmacy, "D1")
    await received(receiver, 2, reads)
    assert [path for path, _, _ in receiver.received] == ["/hook", "/hook"]
    assert len(set(receiver.ids())) == 1


async def test_another_pharmacys_events_are_not_sent(app, client, pharmacy, other_pharmacy,
                                                     receiver, start, reads):
    await start(hook(receiver.url))
    await submit(client, other_pharmacy, "O1", finess=OTHER_FINESS)
    await submit(client, pharmacy, "O2")
    await received(receiver, 1, reads)
    assert receiver.ids() == [e["id"] for e in await feed(client, pharmacy)]
    assert len(await feed(client, other_pharmacy)) == 1


async def test_a_loopback_url_is_refused_unless_allowed(app, client, pharmacy, receiver, start):
    entry = hook(receiver.url, allow_private=False)
    with capture_logs() as logs:
        await start(entry)
        before = (await cursor(app, entry)).last_event_id
        await submit(client, pharmacy, "L1")
        state = await wait_for(lambda: cursor_with_error(app, entry))
    assert state.last_error.startswith("refused") and state.last_event_id == before
    assert receiver.received == []
    assert any(line["event"] == "webhook.refused" for line in logs)


async def cursor_with_error(app, entry):
    state = await cursor(app, entry)
    return state if state and state.last_error else None


async def test_no_webhook_returns_at_once(app):
    async with asyncio.timeout(1):
        await run_webhooks(app.state.context, asyncio.Event())


async def test_while_an_id_is_missing_only_settled_events_are_sent():
    now = datetime.now(UTC)
    old, young = (Event(id=i, event_id=f"evt_{i}", finess=FINESS, type="claim.accepted",
                        at=now - timedelta(seconds=age)) for i, age in ((3, 60), (5, 1)))
    assert ready(Pending(1, 0, None, [old, young], complete=True), now) == [old, young]
    assert ready(Pending(1, 0, None, [old, young], complete=False), now) == [old]
    assert ready(Pending(1, 0, None, [young, old], complete=False), now) == []


async def test_backoff_is_bounded_and_grows():
    backoff = Backoff(base_s=1, cap_s=300)
    assert all(0 <= backoff.delay(1) <= 1 for _ in range(100))
    assert all(0 <= backoff.delay(50) <= 300 for _ in range(100))
    assert max(backoff.delay(9) for _ in range(200)) > 1


async def test_a_hand_over_reaches_the_webhook_exported_then_settled(
        app, client, pharmacy, operations, simulators, receiver, start, reads):
    """The batch hand-over's events (docs/handover.md) leave by the same outbox: exported,
    then the acknowledgement's answer, signed, in the feed's order."""
    await start(hook(receiver.url))
    assert (await client.post("/v1/operators/opera/pause", headers=operations)).status_code == 200
    await submit(client, pharmacy, "WH1")
    handover = Handover.of(app.state.context)
    _, batch_file = await handover.export("opera", actor=cli_actor())
    give_keys(simulators["opera"], app)
    answer = await acknowledge(simulators["opera"], batch_file)
    assert answer.status_code == 200, answer.text
    await handover.import_acks("opera", answer.text, actor=cli_actor())
    events = await feed(client, pharmacy)
    types = [e["type"] for e in events]
    assert types.index("claim.exported") < types.index("claim.accepted"), types
    await received(receiver, len(events), reads)
    assert receiver.ids() == [e["id"] for e in events]
    for _, headers, body in receiver.received:
        verify(KEY, headers, body)


async def test_a_receiver_in_backoff_has_nothing_read_until_its_attempt_is_due(app):
    """The completeness count spans every pharmacy's events since the cursor: a receiver
    failing for hours must not have it run at every poll while it waits."""
    db, now = app.state.context.db, datetime.now(UTC)
    due = now + timedelta(minutes=5)

    def seed(session) -> None:  # type: ignore[no-untyped-def]
        session.add(WebhookCursor(key="k" * 64, finess=FINESS, last_event_id=0, attempts=3,
                                  next_attempt_at=due, updated_at=now))
        session.add(Event(event_id="evt_backoff", finess=FINESS, type="claim.accepted",
                          at=now))

    await db.write(seed)
    sent: list[str] = []

    @sql_events.listens_for(db.engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        sent.append(statement)

    waiting = await db.read(lambda s: repository.pending(
        s, key="k" * 64, finess=FINESS, limit=10, now=now))
    assert (waiting.events, waiting.attempts, waiting.next_attempt_at) == ([], 3, due)
    assert not any("events" in statement for statement in sent)  # the cursor alone
    later = await db.read(lambda s: repository.pending(
        s, key="k" * 64, finess=FINESS, limit=10, now=due + timedelta(seconds=1)))
    sql_events.remove(db.engine, "before_cursor_execute", record)
    assert [e.event_id for e in later.events] == ["evt_backoff"]
    assert sum("count" in statement for statement in sent) == 1
