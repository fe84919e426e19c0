"""Long-polls on /v1/events: woken by new events on this instance or another, never
polling the database while they wait, and at most `long_polls_per_key` per key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from instances import REDIS_URL, instance, with_limits
from sqlalchemy import event
from sqlalchemy.engine import Engine
from synthetic import claim_body
from waiting import eventually, parked_long_polls

from gateway.events import service as events_service

pytestmark = pytest.mark.anyio


@contextmanager
def events_queries(engine: Engine) -> Iterator[list[float]]:
    """When (time.monotonic()) each statement reading the events table ran on this engine
    meanwhile."""
    seen: list[float] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FROM events" in statement:
            seen.append(time.monotonic())

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def start_of_feed(client, headers) -> str:  # type: ignore[no-untyped-def]
    return str((await client.get("/v1/events", headers=headers)).json()["next"])


async def test_a_waiting_long_poll_reads_nothing_until_woken(app, client, pharmacy,
                                                             monkeypatch):
    # The only read of a waiting long-poll not woken is its slow re-check against a lost
    # wake-up (RECHECK_S, 5 s): brought to 1 s, it is the event that closes the watch.
    monkeypatch.setattr(events_service, "RECHECK_S", 1.0)
    start = await start_of_feed(client, pharmacy)
    loop = asyncio.get_running_loop()
    parked = parked_long_polls(app)
    with events_queries(app.state.context.db.engine) as queries:
        waiting = asyncio.create_task(
            client.get(f"/v1/events?after={start}&wait=10", headers=pharmacy))
        await eventually(lambda: len(parked) == 1, what="the long-poll waiting")
        # the wait under way ends after 1 s; the one after the re-check lasts 5 s
        monkeypatch.setattr(events_service, "RECHECK_S", 5.0)
        await eventually(lambda: len(queries) == 2, what="the re-check")
    first_read, recheck = queries
    assert first_read < parked[0]  # read once, found nothing, then waited...
    assert recheck - parked[0] >= 0.95  # ...with no periodic re-read before the re-check
    assert not waiting.done()
    await client.post("/v1/claims", json=claim_body("Q1"), headers=pharmacy)
    posted = loop.time()  # the claim's event is committed: timed from here, not from the
    # request (a slow commit on a loaded machine took CI's reading to 2.0 s)
    page = (await waiting).json()
    assert [e["type"] for e in page["events"]] == ["claim.accepted"]
    # woken: a missed wake-up would wait for the next re-check, 5 s after the last one
    assert loop.time() - posted < 2.5


async def test_another_instance_wakes_a_waiting_long_poll(settings, simulators, pharmacy,
                                                         monkeypatch):
    """Two apps on one PostgreSQL database (LISTEN/NOTIFY), or on SQLite and one Redis.
    The waiter's re-check (against a lost wake-up) is put off beyond the test: only the
    other instance's wake-up can answer it, however slow the machine."""
    monkeypatch.setattr(events_service, "RECHECK_S", 60.0)
    other_settings = settings
    if settings.database_url.startswith("sqlite"):
        if not REDIS_URL:
            pytest.skip("on SQLite, instances are woken through Redis: needs "
                        "GATEWAY_TEST_REDIS_URL")
        other_settings = settings.model_copy(update={"redis_url": REDIS_URL})
    async with instance(other_settings, simulators) as (_, waiter), \
            instance(other_settings, simulators) as (_, writer):
        start = await start_of_feed(waiter, pharmacy)
        waiting = asyncio.create_task(
            waiter.get(f"/v1/events?after={start}&wait=20", headers=pharmacy))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        stored = await writer.post("/v1/claims", json=claim_body("X1"), headers=pharmacy)
        assert stored.status_code == 201
        page = (await asyncio.wait_for(waiting, 15)).json()  # woken: no re-check before 60 s
        assert [(e["type"], e["claim_id"]) for e in page["events"]] == [
            ("claim.accepted", stored.json()["id"])]


async def test_the_fourth_concurrent_long_poll_of_a_key_is_refused(settings, simulators,
                                                                   pharmacy, other_pharmacy):
    async with instance(with_limits(settings, long_polls_per_key=3), simulators) as (app, http):
        start = await start_of_feed(http, pharmacy)
        parked = parked_long_polls(app)
        polls = [asyncio.create_task(http.get(f"/v1/events?after={start}&wait=10",
                                              headers=pharmacy)) for _ in range(3)]
        await eventually(lambda: len(parked) == 3, what="three long-polls waiting")
        assert not any(poll.done() for poll in polls)
        loop = asyncio.get_running_loop()
        began = loop.time()
        fourth = await http.get(f"/v1/events?after={start}&wait=10", headers=pharmacy)
        assert fourth.status_code == 429 and loop.time() - began < 1.0  # at once
        assert fourth.headers["Retry-After"] == "5"
        assert fourth.json()["type"] == "rate-limited"
        # another key has its own places
        assert (await http.get("/v1/events?wait=0.2", headers=other_pharmacy)).status_code == 200
        await http.post("/v1/claims", json=claim_body("F1"), headers=pharmacy)
        answers = await asyncio.gather(*polls)
        assert [len(a.json()["events"]) for a in answers] == [1, 1, 1]
        # the places are given back
        again = await http.get(f"/v1/events?after={answers[0].json()['next']}&wait=0.2",
                               headers=pharmacy)
        assert again.status_code == 200 and again.json()["events"] == []


async def test_long_poll_places_are_shared_by_the_instances(settings, simulators, pharmacy):
    limited = with_limits(settings, long_polls_per_key=2)
    async with instance(limited, simulators) as (first_app, first), \
            instance(limited, simulators) as (_, second):
        start = await start_of_feed(first, pharmacy)
        parked = parked_long_polls(first_app)
        polls = [asyncio.create_task(first.get(f"/v1/events?after={start}&wait=3",
                                               headers=pharmacy)) for _ in range(2)]
        await eventually(lambda: len(parked) == 2, what="both places taken")
        refused = await second.get(f"/v1/events?after={start}&wait=3", headers=pharmacy)
        assert refused.status_code == 429
        assert [p.status_code for p in await asyncio.gather(*polls)] == [200, 200]
        assert (await second.get(f"/v1/events?after={start}&wait=0.1",
                                 headers=pharmacy)).status_code == 200
