"""Waiting for the event that proves a test's point, instead of sleeping: a bounded poll
of a positive signal, and the signals the gateway's long-polls give."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(predicate: Callable[[], bool | Awaitable[bool]],
                     within_s: float = 10.0, what: str = "the condition") -> None:
    """Return as soon as `predicate` holds; fail after `within_s` seconds."""
    ends = time.monotonic() + within_s
    while True:
        held = predicate()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        assert time.monotonic() < ends, f"{what} did not happen within {within_s} s"
        await asyncio.sleep(0.01)


def parked_long_polls(app: Any) -> list[float]:
    """When (time.monotonic()) each long-poll of this app took its place, from now on. A
    long-poll takes its place after its first read found nothing and goes straight to
    waiting: one listed here is waiting to be woken."""
    limiter = app.state.context.limiter
    real, parked = limiter.take_poll_slot, []

    async def take_poll_slot(*args: Any, **kwargs: Any) -> str | None:
        holder = await real(*args, **kwargs)
        if holder is not None:
            parked.append(time.monotonic())
        return holder

    limiter.take_poll_slot = take_poll_slot  # looked up on the limiter at every long-poll
    return parked
