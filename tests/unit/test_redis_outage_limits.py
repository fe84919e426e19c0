"""Rate limits while Redis is stopped, restarted empty, or hung (a private `redis-server`,
or a socket that never answers), with an in-memory store standing in for the database.

Proves: while Redis is down the instances count in the fallback they share, so a key's
limit holds for them together (not once per instance), with one warning per outage and
one line when Redis is back, where the counting returns by itself; counts a restarted
Redis lost still count; a Redis that accepts and never answers delays a request by a
bound, and long-poll places are taken and given back in the fallback; a database outage
is a store outage, and no store failure stops the limiter's periodic sync.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from gateway.security.limit_store import DatabaseWindows, RedisWindows, StoreUnavailable
from gateway.security.ratelimit import SYNC_WAIT_S, RateLimiter
from gateway.storage.health import DatabaseUnavailable
from tests.e2e.private_redis import PrivateRedis, private_redis

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
LIMIT = 100
PREFIX = "gateway:test:limits:"
RETRY_S = 0.2


class MemoryWindows:
    """The database windows, in memory: counts per bucket and slot, long-poll holders."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}
        self.holders: dict[str, set[str]] = {}
        self.adds = 0
        self.fail_next: Exception | None = None

    async def add(self, hits: Sequence[tuple[str, int, int]], buckets: Collection[str],
                  slots: Sequence[int]) -> dict[str, dict[int, int]]:
        await asyncio.sleep(0)
        if self.fail_next is not None:
            failure, self.fail_next = self.fail_next, None
            raise failure
        self.adds += 1
        for bucket, slot, count in hits:
            self.counts[bucket, slot] = self.counts.get((bucket, slot), 0) + count
        return {b: {s: self.counts[b, s] for s in slots if (b, s) in self.counts}
                for b in buckets}

    async def take_slot(self, bucket: str, *, limit: int, holder: str, now: float,
                        ttl_s: float) -> bool:
        held = self.holders.setdefault(bucket, set())
        if len(held) >= limit:
            return False
        held.add(holder)
        return True

    async def give_slot(self, bucket: str, *, holder: str) -> None:
        self.holders.get(bucket, set()).discard(holder)

    async def aclose(self) -> None:
        return None


def frozen_clock() -> float:
    return 1000.0  # every instance on one wall clock, within one slot


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path / "redis") as server:
        yield server


@asynccontextmanager
async def limiters(url: str, fallback: MemoryWindows,
                   count: int) -> AsyncIterator[list[RateLimiter]]:
    stores = [RedisWindows(url, PREFIX, fallback=fallback, retry_s=RETRY_S) for _ in range(count)]
    try:
        yield [RateLimiter({"reads": LIMIT}, store, clock=frozen_clock) for store in stores]
    finally:
        for store in stores:
            await store.client.aclose()


async def admitted(limiter: RateLimiter, attempts: int, caller: str = "key") -> int:
    return sum([await limiter.check(caller, "reads") is None for _ in range(attempts)])


def events(logs: list[dict[str, object]], level: str | None = None) -> list[object]:
    return [e["event"] for e in logs if level is None or e["log_level"] == level]


async def test_instances_limit_together_in_the_fallback_and_go_back_to_redis(redis_server):
    database = MemoryWindows()
    async with limiters(redis_server.url, database, 2) as (first, second):
        assert await admitted(first, 1, caller="warm-up") == 1
        await first.sync()
        assert database.adds == 0  # Redis counts while it is there
        redis_server.stop()
        with capture_logs() as logs:
            total = 0
            for _ in range(2 * LIMIT):
                total += await admitted(first, 1) + await admitted(second, 1)
        # Limiting alone, each instance would admit LIMIT: twice the limit in all.
        assert LIMIT <= total <= LIMIT + LIMIT // 10
        assert database.adds > 0
        assert events(logs, "warning") == ["ratelimit.redis_unreachable"] * 2  # per instance
        assert "ratelimit.store_unreachable" not in events(logs)  # never limiting alone

        redis_server.start()
        await asyncio.sleep(RETRY_S)
        adds = database.adds
        with capture_logs() as logs:
            for limiter in (first, second):
                assert await admitted(limiter, 1, caller="after") == 1
                await limiter.sync()
        assert events(logs) == ["ratelimit.redis_reachable"] * 2
        assert database.adds == adds  # counted in Redis again
        client = aioredis.from_url(redis_server.url)
        try:
            assert len(await client.keys(f"{PREFIX}w:*")) == 1  # the caller "after"
        finally:
            await client.aclose()


async def test_counts_a_restarted_redis_lost_still_count(redis_server):
    async with limiters(redis_server.url, MemoryWindows(), 1) as (limiter,):
        assert await admitted(limiter, LIMIT - 20) == LIMIT - 20
        await limiter.sync()
        redis_server.stop()
        redis_server.start()  # empty: nothing is persisted
        await asyncio.sleep(RETRY_S)
        assert await admitted(limiter, LIMIT) == 20


@contextmanager
def silent_server() -> Iterator[str]:
    """A port that accepts connections and never answers: a hung Redis."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()


async def test_a_hung_redis_delays_a_request_by_a_bound_and_polls_use_the_fallback():
    database = MemoryWindows()
    with silent_server() as url:
        async with limiters(url, database, 1) as (limiter,):
            slowest = 0.0
            answers = []
            for _ in range(2 * LIMIT):
                started = time.monotonic()
                answers.append(await limiter.check("key", "reads"))
                slowest = max(slowest, time.monotonic() - started)
            assert sum(a is None for a in answers) == LIMIT  # the limit still holds
            assert slowest < SYNC_WAIT_S + 1.0  # bounded, not hung

            holder = await asyncio.wait_for(limiter.take_poll_slot("key", 1, 30.0), 3.0)
            assert holder is not None and not holder.startswith("local:")
            assert sum(len(h) for h in database.holders.values()) == 1  # in the fallback
            assert await limiter.take_poll_slot("key", 1, 30.0) is None  # the place is held
            await asyncio.wait_for(limiter.give_poll_slot("key", holder), 3.0)
            assert sum(len(h) for h in database.holders.values()) == 0  # given back there


class FailingDatabase:
    async def write(self, work: object) -> object:
        raise DatabaseUnavailable("psycopg OperationalError")


async def test_a_database_outage_is_a_store_outage():
    windows = DatabaseWindows(FailingDatabase())  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable):
        await windows.add([("b", 0, 1)], ["b"], [0])
    with pytest.raises(StoreUnavailable):
        await windows.take_slot("b", limit=1, holder="h", now=0.0, ttl_s=1.0)


async def test_no_store_failure_stops_the_periodic_sync():
    store = MemoryWindows()
    store.fail_next = RuntimeError("a bug in a store")
    limiter = RateLimiter({"reads": LIMIT}, store, clock=frozen_clock, sync_s=0.05)
    stopping = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(limiter.run(stopping))
        assert await admitted(limiter, 3) == 3
        for _ in range(100):
            if store.adds:
                break
            await asyncio.sleep(0.02)
        stopping.set()
        await asyncio.wait_for(task, 2.0)
    assert sum(store.counts.values()) == 3  # synced after the failure
    assert events(logs) == ["ratelimit.store_failed", "ratelimit.store_reachable"]
