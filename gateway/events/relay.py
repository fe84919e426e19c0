"""New events told to the other instances: PostgreSQL LISTEN, or Redis pub/sub on SQLite.

On PostgreSQL the events table's `pg_notify` (`notifier`) reaches every instance on
the same database through one dedicated connection each, listening on
`gateway_events`. On SQLite with `redis_url`, each instance publishes the pharmacies
of its commits on `{namespace}:events` and wakes its waiters on the others'. A payload
is a FINESS and nothing else; a forged one only makes waiters read again. When the
connection is lost (Redis or PostgreSQL stopped, restarting), no request fails: waiters
fall back to their slow re-check and pharmacies committed meanwhile wait in an outbox
(a set: one entry per pharmacy, however long the outage); this task reconnects with a
bounded backoff, with one warning per outage (`events.relay.unreachable`,
`events.listen.unreachable`) and one line when back (`….reachable`), publishes the
outbox and wakes every waiter once it listens again.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from gateway.events.notifier import CHANNEL, EventHub

log = structlog.get_logger(__name__)
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 2.0  # listening again within 2 s of the server returning
POLL_S = 0.05  # Redis: how often the session looks at both the channel and the outbox


class _Backoff:
    """One warning per outage, not one per reconnection attempt; a growing delay."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.delay = BACKOFF_MIN_S
        self.unreachable = False

    def connected(self) -> None:
        if self.unreachable:
            log.info(f"{self.name}.reachable")
        self.unreachable, self.delay = False, BACKOFF_MIN_S

    async def failed(self, exc: BaseException, stopping: asyncio.Event) -> None:
        if not self.unreachable:
            log.warning(f"{self.name}.unreachable", error=type(exc).__name__)
        self.unreachable = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), self.delay)
        self.delay = min(self.delay * 2, BACKOFF_MAX_S)


def session_goes_on(stopping: asyncio.Event) -> bool:
    """False once `stopping` is set; CancelledError if this task was cancelled: redis-py's
    read timeout may swallow a cancellation that lands on it, and the session must end
    all the same (else the lifespan would wait for it forever)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return not stopping.is_set()


def libpq_url(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(
        hide_password=False)


async def listen_postgres(database_url: str, hub: EventHub, stopping: asyncio.Event) -> None:
    """Wake this instance's waiters on every `pg_notify` of the database, until `stopping`."""
    backoff = _Backoff("events.listen")
    while not stopping.is_set():
        try:
            async with await psycopg.AsyncConnection.connect(
                    libpq_url(database_url), autocommit=True, connect_timeout=5,
                    keepalives=1, keepalives_idle=30) as connection:
                await connection.execute(f"LISTEN {CHANNEL}")
                backoff.connected()
                hub.wake_all()  # whatever was committed while nobody listened
                async for notice in connection.notifies():
                    hub.wake((notice.payload,))
        except (psycopg.Error, OSError) as exc:
            await backoff.failed(exc, stopping)


async def relay_redis(redis_url: str, channel: str, instance_id: str, hub: EventHub,
                      stopping: asyncio.Event) -> None:
    """Publish this instance's commits, wake on the others', until `stopping`."""
    outbox: set[str] = set()
    hub.committed.append(outbox.update)
    backoff = _Backoff("events.relay")
    try:
        while not stopping.is_set():
            try:
                await _redis_session(redis_url, channel, instance_id, hub, outbox, backoff,
                                     stopping)
            except (RedisError, OSError, TimeoutError) as exc:
                await backoff.failed(exc, stopping)
    finally:
        hub.committed.remove(outbox.update)


async def _redis_session(redis_url: str, channel: str, instance_id: str, hub: EventHub,
                         outbox: set[str], backoff: _Backoff, stopping: asyncio.Event) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True, socket_connect_timeout=2.0,
                               socket_timeout=5.0, health_check_interval=10,
                               retry=Retry(NoBackoff(), 0))
    try:
        async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(channel)
            backoff.connected()
            hub.wake_all()
            while session_goes_on(stopping):
                message = await pubsub.get_message(timeout=POLL_S)
                if message is not None and message["type"] == "message":
                    sender, _, finess = str(message["data"]).partition(" ")
                    if sender != instance_id:
                        hub.wake((finess,))
                while outbox:
                    finess = outbox.pop()
                    try:
                        await client.publish(channel, f"{instance_id} {finess}")
                    except BaseException:
                        outbox.add(finess)  # sent by the next session
                        raise
    finally:
        await client.aclose()
