"""The events feed's long-poll: woken by new events, bounded per key, never polling.

A long-poll subscribes to its pharmacy's wake-ups (`notifier.EventHub`) before its
first read, so an event committed in between is not missed. When that read finds
nothing, it takes one of the key's `[limits] long_polls_per_key` places (shared by
every instance; the next one is refused at once with 429), then waits: it reads again
only when woken, or every `RECHECK_S` in case a wake-up was lost, and at its end.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from gateway.context import AppContext
from gateway.errors import RateLimited
from gateway.events import repository
from gateway.observability.metrics import RATE_LIMITED
from gateway.security.apikeys import Principal
from gateway.storage.models import Event

RECHECK_S = 5.0  # a read at least this often while waiting, against a lost wake-up
SLOT_MARGIN_S = 30.0  # a long-poll's place outlives its wait by this (a crashed instance)
RETRY_AFTER_S = 5


async def read(*, ctx: AppContext, principal: Principal, after: int, limit: int,
               wait: float) -> list[Event]:
    """The pharmacy's events after `after`; with `wait`, up to that long for the first."""
    finess = principal.finess or ""

    async def page() -> list[Event]:
        return await ctx.db.read(lambda s: repository.page(s, finess, after, limit))

    if wait <= 0:
        return await page()
    with ctx.events.listening(finess) as woken:
        found = await page()
        if found:
            return found
        places = ctx.settings.limits.long_polls_per_key
        holder = await ctx.limiter.take_poll_slot(principal.key_id, places,
                                                  wait + SLOT_MARGIN_S)
        if holder is None:
            RATE_LIMITED.labels("long_polls").inc()
            raise RateLimited(f"at most {places} concurrent long-polls per key; retry in "
                              f"{RETRY_AFTER_S} s", headers={"Retry-After": str(RETRY_AFTER_S)})
        try:
            return await _wait(page, woken, wait)
        finally:
            await ctx.limiter.give_poll_slot(principal.key_id, holder)


async def _wait(page: Callable[[], Awaitable[list[Event]]], woken: asyncio.Event,
                wait: float) -> list[Event]:
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + wait
    while True:
        left = ends_at - loop.time()
        if left <= 0:
            return []
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), min(left, RECHECK_S))
        woken.clear()
        found = await page()
        if found or loop.time() >= ends_at:
            return found
