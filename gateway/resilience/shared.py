"""Breaker state shared by gateway instances through Redis: minimal, and never blocking.

Everything lives under the deployment's namespace (`gateway:<deployment id>`, see
`gateway.storage.deployment`): instances sharing a database share their breakers, and
another deployment on the same Redis server never touches them. A local transition
(open, closed) is published on `{prefix}:breakers` and stored under
`{prefix}:breaker:{operator}` so an instance started later learns an open breaker.

Redis is not trusted: each message carries an HMAC under `security.redis_key` that
binds it to the namespace, and an instant; one unsigned, wrongly signed, stale or
malformed is dropped and counted (`gateway_breaker_sync_dropped_total{reason}`).
A remote open time is capped at the operator's `breaker_reset_max_s`, and the open
time left comes from the signed instant, not from a key's TTL anyone can change.
Redis is only a shortcut: when it is unreachable (stopped, restarting, not answering)
every instance keeps working on its own breakers, and this task reconnects with a
bounded backoff (at most `BACKOFF_MAX_S` between attempts): one warning per outage
(`breaker_sync.redis_unreachable`), one line when it is back
(`breaker_sync.redis_reachable`). Back in step after: transitions made meanwhile are
published then if they still hold (the latest per operator), the stored states are
read again, and a breaker still open here is stored again if Redis lost its key (a
restart without persistence), so that an instance started later still learns it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
import structlog
from prometheus_client import Counter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.events.relay import session_goes_on
from gateway.observability.metrics import REGISTRY
from gateway.resilience.breaker import OperatorBreaker
from gateway.resilience.operators import Operator

log = structlog.get_logger(__name__)
KEY_MARGIN_S = 60.0  # a key outlives the open time by this much
POLL_S = 0.1  # how often the session looks at both the channel and the outbox
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 2.0  # back in step within 2 s of Redis returning
SHARED_STATES = ("open", "closed")  # half-open is a local trial, never shared
MAX_AGE_S = 30.0  # a published message older (or further ahead) than this is a replay
DROP_LOG_EVERY_S = 60.0  # one warning per reason per minute, however many are dropped
DROPPED = Counter(
    "gateway_breaker_sync_dropped_total",
    "Breaker messages from Redis ignored: unsigned, bad_mac, stale or malformed",
    ["reason"], registry=REGISTRY,
)


async def run_breaker_sync(
    operators: Iterable[Operator], redis_url: str, instance_id: str,
    stopping: asyncio.Event, *, prefix: str, key: bytes,
) -> None:
    """Keep these operators' breakers in step with the deployment's other instances until
    `stopping`; `prefix` is the deployment's namespace, `key` the HMAC key."""
    await BreakerSync([op.breaker for op in operators], instance_id, prefix, key).run(
        redis_url, stopping)


class MessageSeal:
    """HMAC-SHA256 over the namespace and the canonical message: valid in this deployment
    only, and only from a holder of the key."""

    def __init__(self, key: bytes, prefix: str) -> None:
        self._key, self._prefix = key, prefix

    def _mac(self, data: dict[str, Any]) -> str:
        body = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hmac.new(self._key, f"{self._prefix}|{body}".encode(), hashlib.sha256).hexdigest()

    def dumps(self, data: dict[str, Any]) -> str:
        return json.dumps({**data, "mac": self._mac(data)})

    def loads(self, raw: str) -> tuple[dict[str, Any] | None, str]:
        """The message, or None and why it is refused."""
        try:
            data = json.loads(raw)
        except (ValueError, TypeError):
            return None, "malformed"
        if not isinstance(data, dict):
            return None, "malformed"
        mac = data.pop("mac", None)
        if not isinstance(mac, str):
            return None, "unsigned"
        if not hmac.compare_digest(mac, self._mac(data)):
            return None, "bad_mac"
        return data, ""


class BreakerSync:
    """Publishes local transitions and applies remote ones; never echoes what it applies."""

    def __init__(self, breakers: Iterable[OperatorBreaker], instance_id: str, prefix: str,
                 key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        self.breakers = {breaker.name: breaker for breaker in breakers}
        self.instance_id = instance_id
        self.channel = f"{prefix}:breakers"
        self.key_prefix = f"{prefix}:breaker:"
        self.seal = MessageSeal(key, prefix)
        self.pending: dict[str, str] = {}  # operator -> state to publish (latest wins)
        self._clock = clock  # wall clock: instants travel between hosts
        self._applying = False
        self._unreachable = False
        self._delay = BACKOFF_MIN_S
        self._drop_logged: dict[str, float] = {}

    def on_change(self, breaker: OperatorBreaker, state: str) -> None:
        """Runs inside the breaker's transition: only record it, the session publishes it."""
        if not self._applying and state in SHARED_STATES:
            self.pending[breaker.name] = state

    def apply(self, raw: str, *, stored: bool = False) -> None:
        """Apply another instance's signed transition; `_applying` keeps it from being
        re-published. `stored`: the late starters' key, whose age may exceed MAX_AGE_S."""
        data, reason = self.seal.loads(raw)
        parsed = self._parse(data) if data is not None else None
        if data is not None and parsed is None:
            reason = "malformed"
        if parsed is None:
            self._dropped(reason)
            return
        name, state, sender, age, open_for = parsed
        if not stored and abs(age) > MAX_AGE_S:
            self._dropped("stale")
            return
        if stored and age > (open_for or 0.0) + KEY_MARGIN_S:
            return  # outlived its own expiry: kept by hand, or replayed
        breaker = self.breakers.get(name)
        if breaker is None or sender == self.instance_id:
            return
        if open_for is not None:  # what is left of it, at most what this operator allows
            open_for = min(max(0.0, open_for - max(age, 0.0)), breaker.reset_max_s)
            if stored and open_for <= 0:
                return  # an open time long over: nothing to learn
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

    def _parse(self, data: dict[str, Any]) -> tuple[str, str, str, float, float | None] | None:
        try:
            state, at = str(data["state"]), float(data["at"])
            open_for = data.get("open_for")
            open_for = None if open_for is None else float(open_for)
            parsed = (str(data["operator"]), state, str(data.get("from")),
                      self._clock() - at, open_for)
        except (ValueError, TypeError, KeyError):
            return None
        return parsed if state in SHARED_STATES else None

    def _dropped(self, reason: str) -> None:
        """Counted always; logged once per reason and minute (a flood must not flood logs)."""
        DROPPED.labels(reason=reason).inc()
        now = time.monotonic()
        if now - self._drop_logged.get(reason, -DROP_LOG_EVERY_S) >= DROP_LOG_EVERY_S:
            self._drop_logged[reason] = now
            log.warning("breaker_sync.message_dropped", reason=reason)

    async def run(self, redis_url: str, stopping: asyncio.Event) -> None:
        """Reconnect with a bounded backoff until `stopping`; never raises (but on cancel)."""
        for breaker in self.breakers.values():
            breaker.on_change.append(self.on_change)
        stop = asyncio.create_task(stopping.wait())
        session: asyncio.Task[None] | None = None
        try:
            while not stopping.is_set():
                session = asyncio.create_task(self._session(redis_url, stopping))
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

    async def _session(self, redis_url: str, stopping: asyncio.Event) -> None:
        """Subscribe, learn the stored state, then relay both ways until an error or
        `stopping` (checked each turn: redis-py's read timeout may swallow a cancel)."""
        client = aioredis.from_url(
            redis_url, decode_responses=True, socket_connect_timeout=2.0, socket_timeout=5.0,
            health_check_interval=10, retry=Retry(NoBackoff(), 0))  # we reconnect ourselves
        try:
            async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(self.channel)  # before loading: no change falls between
                await self._load(client)
                await self._restore(client)
                if self._unreachable:
                    log.info("breaker_sync.redis_reachable")
                self._unreachable, self._delay = False, BACKOFF_MIN_S
                while session_goes_on(stopping):
                    message = await pubsub.get_message(timeout=POLL_S)
                    if message is not None and message["type"] == "message":
                        self.apply(message["data"])
                    await self._flush(client)
        finally:
            await client.aclose()

    async def _load(self, client: aioredis.Redis) -> None:
        """Learn breakers opened elsewhere; the signed instant gives the open time left."""
        async with client.pipeline(transaction=False) as pipe:
            for name in self.breakers:
                pipe.get(self.key_prefix + name)
            results = await pipe.execute()
        for raw in results:
            if raw is not None:
                self.apply(raw, stored=True)

    async def _restore(self, client: aioredis.Redis) -> None:
        """Store again, where its key is missing, every breaker open here and not about to
        be published: what a Redis restarted empty forgot. Not published: the others
        heard it when it opened, or learn it by reading the key when they reconnect."""
        for name, breaker in self.breakers.items():
            if breaker.state == "open" and name not in self.pending:
                payload, ttl = self._message(breaker, "open")
                await client.set(self.key_prefix + name, payload, px=int(ttl * 1000), nx=True)

    def _message(self, breaker: OperatorBreaker, state: str) -> tuple[str, float]:
        """This instance's signed message for `state`, and how long its key should live."""
        data: dict[str, Any] = {"operator": breaker.name, "state": state,
                                "from": self.instance_id, "at": self._clock()}
        ttl = KEY_MARGIN_S
        if state == "open":  # open_until is on the monotonic clock, as by default
            data["open_for"] = max(0.0, (breaker.open_until or 0) - time.monotonic())
            ttl += data["open_for"]
        return self.seal.dumps(data), ttl

    async def _flush(self, client: aioredis.Redis) -> None:
        """Publish pending transitions still current; kept pending if Redis fails midway."""
        for name, state in list(self.pending.items()):
            breaker = self.breakers[name]
            if breaker.state == state:
                payload, ttl = self._message(breaker, state)
                async with client.pipeline(transaction=False) as pipe:
                    pipe.set(self.key_prefix + name, payload, px=int(ttl * 1000))
                    pipe.publish(self.channel, payload)
                    await pipe.execute()
            if self.pending.get(name) == state:
                del self.pending[name]
