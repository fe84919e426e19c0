"""Where the instances of one deployment meet to count: Redis when configured, else the database.

Two things are shared: requests per bucket (a keyed hash of the endpoint class and the
caller) and 5 s slot, which an instance adds and reads back in one call
(`gateway.security.ratelimit`); and the few long-polls a key may hold at once, as
slots with an expiry (a crashed instance's slots free themselves). A store that cannot
be reached raises `StoreUnavailable`; the caller then limits on its own.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from gateway.db import Database
from gateway.security import limit_repository as repository
from gateway.security.limit_repository import Hit

KEEP_S = 180  # a Redis slot key outlives the window (65 s) by this margin

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
    """Counts in `rate_windows`, slots in `long_poll_slots`: one write transaction per sync."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, hits: Sequence[Hit], buckets: Collection[str],
                  slots: Sequence[int]) -> dict[str, dict[int, int]]:
        try:
            return await self.db.write(lambda s: repository.add_hits(s, hits, buckets, slots[0]))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def take_slot(self, bucket: str, *, limit: int, holder: str, now: float,
                        ttl_s: float) -> bool:
        try:
            return await self.db.write(lambda s: repository.take_slot(
                s, bucket, limit=limit, holder=holder, now=now, expires_at=now + ttl_s))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def give_slot(self, bucket: str, *, holder: str) -> None:
        try:
            await self.db.write(lambda s: repository.give_slot(s, bucket, holder))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def aclose(self) -> None:
        return None


class RedisWindows:
    """A counter key per bucket and slot (INCRBY and EXPIRE in one MULTI); a sorted set of
    holders per key for long-polls, taken by a script (atomic)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix  # e.g. "gateway:<deployment>:limits:"
        self.client = aioredis.from_url(
            url, decode_responses=True, socket_connect_timeout=1.0, socket_timeout=2.0,
            retry=Retry(NoBackoff(), 0))  # the limiter falls back and retries itself
        self._take = self.client.register_script(_TAKE_SLOT)

    def _key(self, bucket: str, slot: int) -> str:
        return f"{self.prefix}w:{bucket}:{slot}"

    async def add(self, hits: Sequence[Hit], buckets: Collection[str],
                  slots: Sequence[int]) -> dict[str, dict[int, int]]:
        names = list(buckets)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for bucket, slot, count in hits:
                    pipe.incrby(self._key(bucket, slot), count)
                    pipe.expire(self._key(bucket, slot), KEEP_S)
                for bucket in names:
                    pipe.mget([self._key(bucket, slot) for slot in slots])
                results = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        totals: dict[str, dict[int, int]] = {}
        for bucket, values in zip(names, results[2 * len(hits):], strict=True):
            totals[bucket] = {slot: int(v) for slot, v in zip(slots, values, strict=True) if v}
        return totals

    async def take_slot(self, bucket: str, *, limit: int, holder: str, now: float,
                        ttl_s: float) -> bool:
        try:
            taken = await self._take(keys=[f"{self.prefix}polls:{bucket}"],
                                     args=[now, limit, now + ttl_s, holder, int(ttl_s) + 60])
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        return bool(taken)

    async def give_slot(self, bucket: str, *, holder: str) -> None:
        try:
            await self.client.zrem(f"{self.prefix}polls:{bucket}", holder)
        except (RedisError, OSError, TimeoutError) as exc:
            raise StoreUnavailable(type(exc).__name__) from exc

    async def aclose(self) -> None:
        await self.client.aclose()
