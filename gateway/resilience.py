"""The one wrapper around every adapter call: today the per-request deadline.

A pharmacy never waits longer than the operator's `deadline_s`; past it the call
is cancelled and reported as an ambiguous `OperatorUnavailable` (the request may
have reached the operator). Breakers and retries will join here, not in adapters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from adapters.base import OperatorUnavailable
from gateway.operators import Operator

T = TypeVar("T")


async def call_operator(operator: Operator, call: Callable[[], Awaitable[T]]) -> T:
    try:
        async with asyncio.timeout(operator.settings.deadline_s):
            return await call()
    except TimeoutError as exc:
        raise OperatorUnavailable(
            f"no answer within {operator.settings.deadline_s:g} s", ambiguous=True
        ) from exc
