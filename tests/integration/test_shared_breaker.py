"""Breaker state shared through a real Redis: needs GATEWAY_TEST_REDIS_URL.

Messages carry an HMAC under the deployment's key, bound to its namespace: unsigned,
wrongly signed, stale or foreign ones are dropped and counted; a remote open time is
capped at the operator's `breaker_reset_max_s`."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from gateway.observability.metrics import REGISTRY
from gateway.resilience.breaker import OperatorBreaker
from gateway.resilience.guard import Guard
from gateway.resilience.operators import Operator
from gateway.resilience.shared import MessageSeal, run_breaker_sync
from gateway.settings import OperatorSettings

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "")
UNREACHABLE_URL = "redis://127.0.0.1:1/0"
NAMES = ("opera", "santex")
KEY = bytes(range(32))

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not REDIS_URL, reason="needs GATEWAY_TEST_REDIS_URL"),
]


class HealthyAdapter:
    async def health(self) -> None:
        return None


def make_operator(name: str) -> Operator:
    settings = OperatorSettings(name=name, adapter="reference", base_url=f"http://{name}.test",
                                insurers=["80*"])
    breaker = OperatorBreaker(name, fail_max=2, reset_s=30, reset_max_s=120)
    guard = Guard(breaker, timeout_s=0.5, deadline_s=1.0)
    return Operator(settings=settings, adapter=HealthyAdapter(), breaker=breaker,  # type: ignore[arg-type]
                    guard=guard)


async def eventually(condition: Callable[[], bool], within_s: float = 1.0) -> bool:
    ends_at = time.monotonic() + within_s
    while time.monotonic() < ends_at:
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


class Proxy:
    """A TCP relay to Redis that can be cut and restored: an outage on demand."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self.path = parts.path
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}{self.path}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        self.writers.clear()
        await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, up_writer]
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer),
                             return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@pytest.fixture
async def redis_client(anyio_backend: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A channel and key namespace of this test's own."""
    value = f"test-{uuid.uuid4().hex[:10]}"
    yield value
    keys = [key async for key in redis_client.scan_iter(match=f"{value}:*")]
    if keys:
        await redis_client.delete(*keys)


@asynccontextmanager
async def instance(
    url: str, prefix: str, redis_client: aioredis.Redis | None = None,
) -> AsyncIterator[dict[str, OperatorBreaker]]:
    """One gateway instance's breakers and sync task; waits until it has subscribed."""
    operators = [make_operator(name) for name in NAMES]
    stopping = asyncio.Event()
    channel = f"{prefix}:breakers"
    task = asyncio.create_task(run_breaker_sync(
        operators, url, f"instance-{uuid.uuid4().hex[:6]}", stopping, prefix=prefix, key=KEY))
    if redis_client is not None:
        before = dict(await redis_client.pubsub_numsub(channel))[channel]
        for _ in range(200):
            if dict(await redis_client.pubsub_numsub(channel))[channel] > before:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # subscribed, now past loading the keys
    try:
        yield {op.name: op.breaker for op in operators}
    finally:
        stopping.set()
        started = time.monotonic()
        await asyncio.wait_for(task, timeout=2.0)  # returns, does not raise
        assert time.monotonic() - started < 1.0


async def test_a_trip_opens_the_other_instance_within_a_second(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    async with (instance(REDIS_URL, prefix, redis_client) as a,
                instance(REDIS_URL, prefix, redis_client) as b):
        a["opera"].trip(open_for=20)
        assert await eventually(lambda: b["opera"].state == "open", within_s=1.0)
        assert b["opera"].open_until is not None
        assert 18 < b["opera"].open_until - time.monotonic() <= 20
        assert b["santex"].is_closed
        await asyncio.sleep(0.3)
        assert a["opera"].trips == 1  # B's applied change did not come back to A
        stored = json.loads(await redis_client.get(f"{prefix}:breaker:opera"))
        assert stored["state"] == "open" and stored["operator"] == "opera"
        assert 75 < await redis_client.ttl(f"{prefix}:breaker:opera") <= 80


async def test_an_applied_change_is_not_published_again(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    async with redis_client.pubsub(ignore_subscribe_messages=True) as watcher:
        await watcher.subscribe(f"{prefix}:breakers")
        async with (instance(REDIS_URL, prefix, redis_client) as a,
                    instance(REDIS_URL, prefix, redis_client) as b):
            a["opera"].trip(open_for=20)
            assert await eventually(lambda: not b["opera"].is_closed)
            await asyncio.sleep(0.3)
        seen = []
        for _ in range(20):  # a None may only be the subscription's acknowledgement
            if (message := await watcher.get_message(timeout=0.02)) is not None:
                seen.append(json.loads(message["data"]))
    assert [(m["operator"], m["state"]) for m in seen] == [("opera", "open")]


async def test_recovery_on_one_instance_closes_the_other(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    async with (instance(REDIS_URL, prefix, redis_client) as a,
                instance(REDIS_URL, prefix, redis_client) as b):
        a["opera"].trip(open_for=20)
        assert await eventually(lambda: b["opera"].state == "open")
        a["opera"].half_open()
        a["opera"].reset()
        assert await eventually(lambda: b["opera"].is_closed, within_s=1.0)
        await asyncio.sleep(0.2)
        assert a["opera"].is_closed
        stored = json.loads(await redis_client.get(f"{prefix}:breaker:opera"))
        assert stored["state"] == "closed"


async def test_an_instance_started_later_learns_the_open_breaker(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    async with instance(REDIS_URL, prefix, redis_client) as a:
        a["opera"].trip(open_for=20)
        key = f"{prefix}:breaker:opera"
        for _ in range(100):
            if await redis_client.exists(key):
                break
            await asyncio.sleep(0.01)
        async with instance(REDIS_URL, prefix) as c:
            assert await eventually(lambda: c["opera"].state == "open", within_s=1.0)
            assert c["opera"].open_until is not None
            assert 17 < c["opera"].open_until - time.monotonic() <= 20
            assert c["santex"].is_closed


async def test_unreachable_redis_leaves_breakers_local(anyio_backend: str) -> None:
    with capture_logs() as logs:
        async with instance(UNREACHABLE_URL, "unreachable") as local:
            await asyncio.sleep(0.8)  # several reconnection attempts
            local["opera"].trip(open_for=5)
            assert local["opera"].state == "open"
            await asyncio.sleep(0.3)
            local["opera"].reset()
            assert local["opera"].is_closed
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["breaker_sync.redis_unreachable"]
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]


async def test_an_instance_cut_off_from_redis_catches_up_when_it_is_back(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    proxy = Proxy(REDIS_URL)
    await proxy.start()
    with capture_logs() as logs:
        async with (instance(proxy.url, prefix, redis_client) as a,
                    instance(REDIS_URL, prefix, redis_client) as b):
            await proxy.cut()
            await asyncio.sleep(0.3)
            b["opera"].trip(open_for=20)  # A cannot hear it
            a["santex"].trip(open_for=20)  # B cannot hear it yet
            await asyncio.sleep(0.3)
            assert a["opera"].is_closed and b["santex"].is_closed
            await proxy.start()
            assert await eventually(lambda: a["opera"].state == "open", within_s=3.0)
            assert await eventually(lambda: b["santex"].state == "open", within_s=1.0)
        await proxy.cut()
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert warnings == ["breaker_sync.redis_unreachable"]  # one per outage, not per attempt


# --- messages Redis cannot vouch for ---------------------------------------------------

def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("gateway_breaker_sync_dropped_total",
                                     {"reason": reason}) or 0.0


def message(**fields: object) -> dict[str, object]:
    return {"operator": "opera", "state": "open", "from": "elsewhere", "at": time.time(),
            "open_for": 20.0, **fields}


async def test_forged_messages_on_the_right_channel_are_dropped_and_counted(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    channel = f"{prefix}:breakers"
    before = {reason: dropped(reason) for reason in ("unsigned", "bad_mac", "stale")}
    forged = [
        json.dumps(message()),  # no HMAC at all
        MessageSeal(bytes(32), prefix).dumps(message()),  # signed with another key
        MessageSeal(KEY, "gateway:dep_other").dumps(message()),  # another deployment's
        json.dumps({**json.loads(MessageSeal(KEY, prefix).dumps(message(open_for=5.0))),
                    "open_for": 9999}),  # a genuine message, altered
        MessageSeal(KEY, prefix).dumps(message(at=time.time() - 600)),  # replayed later
    ]
    with capture_logs() as logs:
        async with instance(REDIS_URL, prefix, redis_client) as b:
            for raw in forged:
                await redis_client.publish(channel, raw)
            await asyncio.sleep(0.5)
            assert b["opera"].is_closed and b["santex"].is_closed
            await redis_client.publish(channel, MessageSeal(KEY, prefix).dumps(message()))
            assert await eventually(lambda: b["opera"].state == "open")  # the genuine one
    assert dropped("unsigned") - before["unsigned"] == 1
    assert dropped("bad_mac") - before["bad_mac"] == 3
    assert dropped("stale") - before["stale"] == 1
    drops = [e for e in logs if e["event"] == "breaker_sync.message_dropped"]
    assert {e["reason"] for e in drops} <= {"unsigned", "bad_mac", "stale"}
    assert all(set(e) <= {"event", "reason", "log_level"} for e in drops)  # nothing of theirs


async def test_a_forged_stored_key_does_not_open_a_late_starter(
    prefix: str, redis_client: aioredis.Redis
) -> None:
    await redis_client.set(f"{prefix}:breaker:opera", json.dumps(message()), ex=600)
    await redis_client.set(f"{prefix}:breaker:santex",
                           MessageSeal(bytes(32), prefix).dumps(message(operator="santex")),
                           ex=600)
    async with instance(REDIS_URL, prefix) as c:
        await asyncio.sleep(0.4)
        assert c["opera"].is_closed and c["santex"].is_closed


@pytest.mark.parametrize("stored", [False, True], ids=["published", "stored"])
async def test_a_remote_open_time_is_capped_at_the_operators_maximum(
    prefix: str, redis_client: aioredis.Redis, stored: bool
) -> None:
    raw = MessageSeal(KEY, prefix).dumps(message(open_for=10**9))
    if stored:
        await redis_client.set(f"{prefix}:breaker:opera", raw, ex=600)
    async with instance(REDIS_URL, prefix, None if stored else redis_client) as b:
        if not stored:
            await redis_client.publish(f"{prefix}:breakers", raw)
        assert await eventually(lambda: b["opera"].state == "open")
        assert b["opera"].open_until is not None
        assert 110 < b["opera"].open_until - time.monotonic() <= 120  # reset_max_s = 120
