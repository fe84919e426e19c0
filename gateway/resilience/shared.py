"""Breaker state shared by gateway instances through Redis: minimal, and never blocking.

A local transition (open, closed) is published on `{prefix}:breakers` and stored under
`{prefix}:breaker:{operator}` with an expiry of the open time left plus a margin, so an
instance started later learns an open breaker. Redis is only a shortcut: when it is
unreachable every instance keeps working on its own breakers, and this task reconnects.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.operators import Operator
from gateway.resilience.breaker import OperatorBreaker

log = structlog.get_logger(__name__)
KEY_MARGIN_S = 60.0  # a key outlives the open time by this much
POLL_S = 0.1  # how often the session looks at both the channel and the outbox
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 5.0
SHARED_STATES = ("open", "closed")  # half-open is a local trial, never shared


async def run_breaker_sync(
    operators: Iterable[Operator], redis_url: str, instance_id: str,
    stopping: asyncio.Event, *, prefix: str = "gateway",
) -> None:
    """Keep these operators' breakers in step with other instances until `stopping`."""
    await BreakerSync([op.breaker for op in operators], instance_id, prefix).run(
        redis_url, stopping)


class BreakerSync:
    """Publishes local transitions and applies remote ones; never echoes what it applies."""

    def __init__(self, breakers: Iterable[OperatorBreaker], instance_id: str, prefix: str) -> None:
        self.breakers = {breaker.name: breaker for breaker in breakers}
        self.instance_id = instance_id
        self.channel = f"{prefix}:breakers"
        self.key_prefix = f"{prefix}:breaker:"
        self.pending: dict[str, str] = {}  # operator -> state to publish (latest wins)
        self._applying = False
        self._unreachable = False
        self._delay = BACKOFF_MIN_S

    def on_change(self, breaker: OperatorBreaker, state: str) -> None:
        """Runs inside the breaker's transition: only record it, the session publishes it."""
        if not self._applying and state in SHARED_STATES:
            self.pending[breaker.name] = state

    def apply(self, raw: str, open_for_left: float | None = None) -> None:
        """Apply another instance's transition; `_applying` keeps it from being re-published."""
        try:
            data: dict[str, Any] = json.loads(raw)
            breaker = self.breakers.get(str(data["operator"]))
            state = data["state"]
            open_for = open_for_left if open_for_left is not None else data.get("open_for")
            open_for = None if open_for is None else max(0.0, float(open_for))
        except (ValueError, TypeError, KeyError):
            log.warning("breaker_sync.bad_message")
            return
        if breaker is None or data.get("from") == self.instance_id:
            return
        self._applying = True
        try:
            if state == "open" and breaker.is_closed:
                breaker.trip(open_for=open_for)
            elif state == "closed" and not breaker.is_closed:
                breaker.reset()
            else:
                return
        finally:
            self._applying = False
        log.info("breaker_sync.applied", operator=breaker.name, state=state)

    async def run(self, redis_url: str, stopping: asyncio.Event) -> None:
        """Reconnect with a bounded backoff until `stopping`; never raises (but on cancel)."""
        for breaker in self.breakers.values():
            breaker.on_change.append(self.on_change)
        stop = asyncio.create_task(stopping.wait())
        session: asyncio.Task[None] | None = None
        try:
            while not stopping.is_set():
                session = asyncio.create_task(self._session(redis_url))
                await asyncio.wait({session, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not session.done():
                    return
                self._failed(session.exception())
                await asyncio.wait({stop}, timeout=self._delay)
                self._delay = min(self._delay * 2, BACKOFF_MAX_S)
        finally:
            for task in (stop, session):
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            for breaker in self.breakers.values():
                breaker.on_change.remove(self.on_change)

    def _failed(self, exc: BaseException | None) -> None:
        """One warning per outage, not one per reconnection attempt."""
        if isinstance(exc, RedisError | OSError | TimeoutError):
            if not self._unreachable:
                log.warning("breaker_sync.redis_unreachable", error=type(exc).__name__)
            self._unreachable = True
        elif exc is not None:
            log.error("breaker_sync.failed", exc_info=exc)

    async def _session(self, redis_url: str) -> None:
        """Subscribe, learn the stored state, then relay both ways until an error."""
        client = aioredis.from_url(
            redis_url, decode_responses=True, socket_connect_timeout=2.0, socket_timeout=5.0,
            health_check_interval=10, retry=Retry(NoBackoff(), 0))  # we reconnect ourselves
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(self.channel)  # before loading: no change falls between
                await self._load(client)
                if self._unreachable:
                    log.info("breaker_sync.redis_reachable")
                self._unreachable, self._delay = False, BACKOFF_MIN_S
                while True:
                    message = await pubsub.get_message(timeout=POLL_S)
                    if message is not None and message["type"] == "message":
                        self.apply(message["data"])
                    await self._flush(client)
        finally:
            await client.aclose()

    async def _load(self, client: aioredis.Redis) -> None:
        """Learn breakers opened elsewhere; the key's TTL gives the open time left."""
        async with client.pipeline(transaction=False) as pipe:
            for name in self.breakers:
                pipe.get(self.key_prefix + name)
                pipe.pttl(self.key_prefix + name)
            results = await pipe.execute()
        for raw, pttl in zip(results[::2], results[1::2], strict=True):
            if raw is not None:
                self.apply(raw, open_for_left=max(0.0, pttl / 1000 - KEY_MARGIN_S))

    async def _flush(self, client: aioredis.Redis) -> None:
        """Publish pending transitions still current; kept pending if Redis fails midway."""
        for name, state in list(self.pending.items()):
            breaker = self.breakers[name]
            if breaker.state == state:
                data: dict[str, Any] = {"operator": name, "state": state,
                                        "from": self.instance_id}
                ttl = KEY_MARGIN_S
                if state == "open":  # open_until is on the monotonic clock, as by default
                    data["open_for"] = max(0.0, (breaker.open_until or 0) - time.monotonic())
                    ttl += data["open_for"]
                payload = json.dumps(data)
                async with client.pipeline(transaction=False) as pipe:
                    pipe.set(self.key_prefix + name, payload, px=int(ttl * 1000))
                    pipe.publish(self.channel, payload)
                    await pipe.execute()
            if self.pending.get(name) == state:
                del self.pending[name]
