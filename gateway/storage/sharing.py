"""What the instances of one deployment share at run time, besides their database.

Rate-limit counts and long-poll places: in Redis when `redis_url` is set (under the
deployment's namespace), else in the database (`gateway.security.limit_store`). Wake-ups
of waiting long-polls: PostgreSQL LISTEN/NOTIFY, else Redis pub/sub when configured,
else this instance alone (one SQLite instance; `gateway.events.relay`).

Nothing here makes Redis necessary to answer: while it is stopped or restarting, the
limits count in the database (the store the gateway uses without Redis), breakers stay
each instance's own (`gateway.resilience.shared`) and long-polls re-read the database
every few seconds; every Redis task reconnects by itself, with one warning per outage
and one line when Redis is back.
"""

from __future__ import annotations

import asyncio

from gateway.context import AppContext
from gateway.events.relay import listen_postgres, relay_redis
from gateway.security.limit_store import RedisWindows
from gateway.storage.db import is_sqlite
from gateway.storage.deployment import ensure_deployment_id, redis_namespace


async def start_sharing(context: AppContext, stopping: asyncio.Event) -> list[asyncio.Task[None]]:
    """Point the limiter at its store, listen to commits; the tasks that keep it up."""
    settings = context.settings
    namespace = ""
    if settings.redis_url:
        namespace = redis_namespace(await context.db.write(ensure_deployment_id))
        # the database windows stay, as the fallback while Redis cannot be reached
        context.limiter.store = RedisWindows(settings.redis_url, f"{namespace}:limits:",
                                             fallback=context.limiter.store)
    context.events.install()
    tasks = [asyncio.create_task(context.limiter.run(stopping))]
    if not is_sqlite(settings.database_url):
        tasks.append(asyncio.create_task(
            listen_postgres(settings.database_url, context.events, stopping)))
    elif settings.redis_url:
        tasks.append(asyncio.create_task(relay_redis(
            settings.redis_url, f"{namespace}:events", context.instance_id, context.events,
            stopping)))
    return tasks


async def stop_sharing(context: AppContext) -> None:
    """Once the tasks are stopped."""
    context.events.uninstall()
    if context.limiter.store is not None:
        await context.limiter.store.aclose()
