"""Where the instances of one deployment meet to count: Redis when configured, else the database.

Two things are shared: requests per bucket (a keyed hash of the endpoint class and the
caller) and 5 s slot, which an instance adds and reads back in one call
(`gateway.security.ratelimit`); and the few long-polls a key may hold at once, as
slots with an expiry (a crashed instance's slots free themselves).

Redis is a shortcut, not a dependency: while it cannot be reached (stopped, restarting,
not answering within `REDIS_TIMEOUT_S`) `RedisWindows` counts in its fallback, the
database windows every instance shares anyway, so a key's limit still holds for the
deployment as a whole (a limiter that stopped limiting would let a stolen key harvest).
It tries Redis again at most once per `REDIS_RETRY_S` and goes back to it by itself;
one warning when Redis is lost (`ratelimit.redis_unreachable`), one line when it is
back (`ratelimit.redis_reachable`), whatever the traffic. A store that cannot be
reached at all raises `StoreUnavailable`; the limiter then limits on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Protocol, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from gateway.security import limit_repository as repository
from gateway.security.limit_repository import Hit
from gateway.storage.db import Database
from gateway.storage.health import DatabaseUnavailable

log = structlog.get_logger(__name__)
T = TypeVar("T")
KEEP_S = 180  # a Redis slot key outlives the window (65 s) by this margin
REDIS_TIMEOUT_S = 0.5  # per Redis call: far above a healthy round trip, under SYNC_WAIT_S
REDIS_RETRY_S = 1.0  # while Redis is lost, how often one call tries it again
MAX_FALLBACK_HOLDERS = 10_000  # long-poll places taken in the fallback, to give back there

_TAKE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


class StoreUnavailable(Exception):
    """The shared store did not answer; the limits fall back to this instance's counts."""


class WindowStore(Protocol):
    async def add(self, hits: Sequence[Hit], buckets: Collection[str],
                  slots: Sequence[int]) -> dict[str, dict[int, int]]:
        """Add `hits`; every instance's count per slot (of `slots`) of these buckets."""

    async def take_slot(self, bucket: str, *, limit: int, holder: str, now: float,
                        ttl_s: float) -> bool: ...

    async def give_slot(self, bucket: str, *, holder: str) -> None: ...

    async def aclose(self) -> None: ...


class DatabaseWindows:
    """Counts in `rate_windows`, slots in `long_poll_slots`: one write transaction per sync.
    The database unavailable (`DatabaseUnavailable`) is this store unavailable: the
    limiter then limits alone and its periodic sync goes on: no request fails in the limiter."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, hits: Sequence[Hit], buckets: Collection[str],
                  slots: Sequence[int]) -> dict[str, dict[int, int]]:
        try:
            return await self.db.write(lambda s: repository.add_hits(s, hits, buckets, slots[0]))
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def take_slot(self, bucket: str, *, limit: int, holder: str, now: float,
                        ttl_s: float) -> bool:
        try:
            return await self.db.write(lambda s: repository.take_slot(
                s, bucket, limit=limit, holder=holder, now=now, expires_at=now + ttl_s))
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def give_slot(self, bucket: str, *, holder: str) -> None:
        try:
            await self.db.write(lambda s: repository.give_slot(s, bucket, holder))
        except (SQLAlchemyError, DatabaseUnavailable) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def aclose(self) -> None:
        return None


class RedisWindows:
    """A counter key per bucket and slot (INCRBY and EXPIRE in one MULTI); a sorted set of
    holders per key for long-polls, taken by a script (atomic). With a `fallback` store,
    every call Redis fails is made there instead (see the module docstring)."""

    def __init__(self, url: str, prefix: str, *, fallback: WindowStore | None = None,
                 retry_s: float = REDIS_RETRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix  # e.g. "gateway:<deployment>:limits:"
        self.fallback = fallback
        self.client = aioredis.from_url(
            url, decode_responses=True, socket_connect_timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0))  # the limiter falls back and retries itself
        self._take = self.client.register_script(_TAKE_SLOT)
        self._retry_s = retry_s
        self._clock = clock
        self._lost_at: float | None = None  # when Redis was last found unreachable
        self._fallback_holders: set[str] = set()

    def _key(self, bucket: str, slot: int) -> str:
        return f"{self.prefix}w:{bucket}:{slot}"

    async def add(self, hits: Sequence[Hit], buckets: Collection[str],
                  slots: Sequence[int]) -> dict[str, dict[int, int]]:
        names = list(buckets)
        try:
            return await self._redis(lambda: self._add(hits, names, slots))
        except StoreUnavailable:
            if self.fallback is None:
                raise
        return await self.fallback.add(hits, names, slots)

    async def _add(self, hits: Sequence[Hit], names: list[str],
                   slots: Sequence[int]) -> dict[str, dict[int, int]]:
        async with self.client.pipeline(transaction=True) as pipe:
            for bucket, slot, count in hits:
                pipe.incrby(self._key(bucket, slot), count)
                pipe.expire(self._key(bucket, slot), KEEP_S)
            for bucket in names:
                pipe.mget([self._key(bucket, slot) for slot in slots])
            results = await pipe.execute()
        totals: dict[str, dict[int, int]] = {}
        for bucket, values in zip(names, results[2 * len(hits):], strict=True):
            totals[bucket] = {slot: int(v) for slot, v in zip(slots, values, strict=True) if v}
        return totals

    async def take_slot(self, bucket: str, *, limit: int, holder: str, now: float,
                        ttl_s: float) -> bool:
        try:
            return bool(await self._redis(lambda: self._take(
                keys=[f"{self.prefix}polls:{bucket}"],
                args=[now, limit, now + ttl_s, holder, int(ttl_s) + 60])))
        except StoreUnavailable:
            if self.fallback is None:
                raise
        taken = await self.fallback.take_slot(bucket, limit=limit, holder=holder, now=now,
                                              ttl_s=ttl_s)
        if taken and len(self._fallback_holders) < MAX_FALLBACK_HOLDERS:
            self._fallback_holders.add(holder)  # given back where it was taken
        return taken

    async def give_slot(self, bucket: str, *, holder: str) -> None:
        if holder in self._fallback_holders:
            self._fallback_holders.discard(holder)
            if self.fallback is not None:
                await self.fallback.give_slot(bucket, holder=holder)
            return
        try:
            await self._redis(lambda: self.client.zrem(f"{self.prefix}polls:{bucket}", holder))
        except StoreUnavailable:
            if self.fallback is None:
                raise  # with a fallback: the place expires by itself in Redis

    async def _redis(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call` on Redis, bounded; StoreUnavailable at once while Redis is known lost and
        its retry is not due (the fallback answers without waiting on it)."""
        if self._lost_at is not None and self._clock() - self._lost_at < self._retry_s:
            raise StoreUnavailable("redis unreachable")
        try:
            async with asyncio.timeout(2 * REDIS_TIMEOUT_S):
                result = await call()
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            # ValueError: a counter that is not a number; Redis is not trusted
            self._lost(exc)
            raise StoreUnavailable(type(exc).__name__) from exc
        if self._lost_at is not None:
            self._lost_at = None
            log.info("ratelimit.redis_reachable")
        return result

    def _lost(self, exc: BaseException) -> None:
        if self._lost_at is None:
            log.warning("ratelimit.redis_unreachable", error=type(exc).__name__,
                        fallback="database" if self.fallback is not None else "none")
        self._lost_at = self._clock()

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.fallback is not None:
            await self.fallback.aclose()
