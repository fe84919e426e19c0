"""Breaker sharing and long-poll wake-ups through a private `redis-server` stopped and
started again (empty: nothing is persisted), as in a Redis restart.

Proves: while Redis is down each instance keeps its own breakers (a trip on one does not
reach the other); when it is back both reconnect by themselves, transitions made
meanwhile reach the other instance, and a breaker opened before the restart is stored
again, so that an instance started after the restart still learns it; one warning per
outage and one line on recovery per instance. The events relay wakes the other
instance's waiters once Redis is back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from gateway.events.notifier import EventHub
from gateway.events.relay import relay_redis
from gateway.resilience.breaker import OperatorBreaker
from gateway.resilience.guard import Guard
from gateway.resilience.operators import Operator
from gateway.resilience.shared import run_breaker_sync
from gateway.settings import OperatorSettings
from tests.e2e.private_redis import PrivateRedis, private_redis

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
KEY = bytes(range(32))
PREFIX = "gateway:dep_test"
FINESS = "330001231"


class HealthyAdapter:
    async def health(self) -> None:
        return None


def make_operator(name: str) -> Operator:
    settings = OperatorSettings(name=name, adapter="reference", base_url=f"http://{name}.test",
                                insurers=["80*"])
    breaker = OperatorBreaker(name, fail_max=2, reset_s=30, reset_max_s=120)
    return Operator(settings=settings, adapter=HealthyAdapter(), breaker=breaker,  # type: ignore[arg-type]
                    guard=Guard(breaker, timeout_s=0.5, deadline_s=1.0))


async def eventually(condition: Callable[[], bool], within_s: float) -> bool:
    ends_at = time.monotonic() + within_s
    while time.monotonic() < ends_at:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


def logged(logs: list[dict[str, Any]], event: str) -> int:
    return sum(1 for entry in logs if entry["event"] == event)


async def subscribers(url: str, channel: str) -> int:
    client = aioredis.from_url(url)
    try:
        return int(dict(await client.pubsub_numsub(channel))[channel.encode()])
    finally:
        await client.aclose()


async def wait_subscribed(url: str, channel: str, count: int) -> None:
    for _ in range(200):
        if await subscribers(url, channel) >= count:
            await asyncio.sleep(0.05)  # subscribed, now past loading the stored keys
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} subscribers on {channel}: not within 4 s")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path / "redis") as server:
        yield server


@asynccontextmanager
async def instance(url: str) -> AsyncIterator[dict[str, OperatorBreaker]]:
    """One gateway instance's breakers ("opera", "santex") and its sync task."""
    operators = [make_operator(name) for name in ("opera", "santex")]
    stopping = asyncio.Event()
    task = asyncio.create_task(run_breaker_sync(
        operators, url, f"instance-{uuid.uuid4().hex[:6]}", stopping, prefix=PREFIX, key=KEY))
    try:
        yield {op.name: op.breaker for op in operators}
    finally:
        stopping.set()
        await asyncio.wait_for(task, timeout=3.0)


async def test_breakers_stay_local_while_redis_is_down_and_are_shared_again_after(
    redis_server: PrivateRedis,
) -> None:
    channel = f"{PREFIX}:breakers"
    with capture_logs() as logs:
        async with instance(redis_server.url) as a, instance(redis_server.url) as b:
            await wait_subscribed(redis_server.url, channel, 2)
            a["opera"].trip(open_for=30)  # before the outage: shared, and stored
            assert await eventually(lambda: b["opera"].state == "open", within_s=2.0)

            redis_server.stop()
            assert await eventually(lambda: logged(logs, "breaker_sync.redis_unreachable") == 2,
                                    within_s=5.0)  # both instances now on their own
            a["santex"].trip(open_for=30)  # each on its own while Redis is down
            assert b["santex"].is_closed  # and B learns it only once Redis is back, below

            redis_server.start()  # empty: the stored "opera" key is gone
            assert await eventually(lambda: b["santex"].state == "open", within_s=5.0)
            await wait_subscribed(redis_server.url, channel, 2)
            b["santex"].half_open()
            b["santex"].reset()  # B's trial closes it: A follows, as before the outage
            assert await eventually(lambda: a["santex"].is_closed, within_s=2.0)

            async with instance(redis_server.url) as late:  # started after the restart
                assert await eventually(lambda: late["opera"].state == "open", within_s=2.0)
                assert late["santex"].is_closed
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert warnings == ["breaker_sync.redis_unreachable"] * 2  # one per instance
    reachable = [e["event"] for e in logs if e["event"] == "breaker_sync.redis_reachable"]
    assert reachable == ["breaker_sync.redis_reachable"] * 2
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]


async def test_the_events_relay_wakes_the_other_instance_once_redis_is_back(
    redis_server: PrivateRedis,
) -> None:
    channel = f"{PREFIX}:events"
    hubs = [EventHub(None), EventHub(None)]  # type: ignore[arg-type] - no commits read here
    stopping = asyncio.Event()
    with capture_logs() as logs:
        tasks = [asyncio.create_task(relay_redis(redis_server.url, channel, f"i{n}", hub,
                                                 stopping)) for n, hub in enumerate(hubs)]
        try:
            await wait_subscribed(redis_server.url, channel, 2)
            redis_server.stop()
            assert await eventually(lambda: logged(logs, "events.relay.unreachable") == 2,
                                    within_s=5.0)  # both relays now cut off
            with hubs[1].listening(FINESS) as woken:
                for relay in hubs[0].committed:  # a commit on instance 0 meanwhile
                    relay((FINESS,))
                assert not woken.is_set()  # nothing can reach it while Redis is down...
                redis_server.start()
                await asyncio.wait_for(woken.wait(), timeout=5.0)
            # instance 0 published once back, but its own subscription may come back a
            # moment after the wake-up it sent: wait for both before stopping them
            assert await eventually(lambda: logged(logs, "events.relay.reachable") == 2,
                                    within_s=5.0)
        finally:
            stopping.set()
            for task in tasks:  # as the lifespan does: a session ends only on an error
                task.cancel()
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 3.0)
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert warnings == ["events.relay.unreachable"] * 2
    assert [e["event"] for e in logs if e["event"] == "events.relay.reachable"] == [
        "events.relay.reachable"] * 2
