"""The one wrapper around every adapter call: deadline, breaker, then retries.

- The deadline (`deadline_s`) bounds the whole call, retries included: a pharmacy
  never waits longer. Each attempt also has its own timeout, inside the breaker
  block, so a hung operator counts as a failure (a cancellation would not).
- Only an explicit list of errors is retried: `OperatorUnavailable` that did not
  reach the operator (or any, for idempotent calls), with full jitter, honouring
  `Retry-After`, bounded by attempts and by the time left.
- While the breaker is not closed, nothing is sent: `BreakerOpen` at once.
- The call runs outside pybreaker; its outcome is recorded (see breaker.py).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from adapters.base import OperatorRejected, OperatorUnavailable
from gateway.resilience.breaker import OperatorBreaker

T = TypeVar("T")
MAX_ATTEMPTS = 3
BACKOFF_BASE_S = 0.05
BACKOFF_MAX_S = 1.0


class BreakerOpen(OperatorUnavailable):
    """Nothing was sent: the operator's breaker is open (or half-open, probing)."""

    def __init__(self, operator: str) -> None:
        super().__init__(f"breaker open for {operator}", ambiguous=False)


class DeadlineExceeded(OperatorUnavailable):
    """No answer within the deadline; the request may have reached the operator."""


def _pause_after(exc: BaseException | None, attempt_number: int, rng: random.Random) -> float:
    """The wait after failed attempt `attempt_number`: the operator's `Retry-After`, else
    full jitter under a doubling ceiling."""
    if isinstance(exc, OperatorUnavailable) and exc.retry_after_s is not None:
        return exc.retry_after_s
    ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt_number - 1))
    return rng.uniform(0, ceiling)


def _full_jitter_or_retry_after(rng: random.Random,
                                attempts_before: int = 0) -> Callable[[RetryCallState], float]:
    """tenacity's wait, for a loop that starts after `attempts_before` attempts made."""
    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return _pause_after(exc, attempts_before + state.attempt_number, rng)

    return wait


class Guard:
    """Calls one operator's adapter under its breaker, retry policy and deadline."""

    def __init__(
        self, breaker: OperatorBreaker, *, timeout_s: float, deadline_s: float,
        rng: random.Random | None = None, max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.max_attempts = max_attempts
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy

    async def call(
        self, call: Callable[[], Awaitable[T]], *, idempotent: bool = False,
        deadline_s: float | None = None,
    ) -> T:
        """Run `call` once or more; raise `OperatorUnavailable` (maybe `BreakerOpen`)."""
        deadline = deadline_s if deadline_s is not None else self.deadline_s
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + deadline

        def retryable(exc: BaseException) -> bool:
            return (isinstance(exc, OperatorUnavailable) and not isinstance(exc, BreakerOpen)
                    and (idempotent or not exc.ambiguous))

        # The first attempt runs outside tenacity: nearly every call ends with it, and a
        # retry loop costs ~50 us of CPU to set up and walk (measured), on every claim sent.
        try:
            return await self._attempt(call, deadline)
        except OperatorUnavailable as exc:
            if not retryable(exc) or self.max_attempts < 2:
                raise
            pause = _pause_after(exc, 1, self._rng)
            if pause >= ends_at - loop.time():  # as tenacity's stop_before_delay
                raise
        await asyncio.sleep(pause)
        retrying = AsyncRetrying(
            retry=retry_if_exception(retryable),
            stop=stop_after_attempt(self.max_attempts - 1)
            | stop_before_delay(ends_at - loop.time()),
            wait=_full_jitter_or_retry_after(self._rng, attempts_before=1),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._attempt(call, ends_at - loop.time())
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _attempt(self, call: Callable[[], Awaitable[T]], time_left: float) -> T:
        if not self.breaker.is_closed:
            raise BreakerOpen(self.breaker.name)
        if time_left <= 0:
            raise DeadlineExceeded("deadline reached before trying", ambiguous=False)
        budget = min(self.timeout_s, time_left)
        try:
            async with asyncio.timeout(budget):
                result = await call()
        except TimeoutError as exc:
            failure = DeadlineExceeded(f"no answer within {budget:.2g} s", ambiguous=True)
            self.breaker.record_failure(failure)
            raise failure from exc
        except OperatorUnavailable as exc:
            self.breaker.record_failure(exc)
            raise
        except OperatorRejected:
            self.breaker.record_success()  # it answered: it is up
            raise
        self.breaker.record_success()
        return result

    async def probe(self, check: Callable[[], Awaitable[None]]) -> bool:
        """One health check fed to the breaker; True when it answered.

        Only one runs at a time: a second caller does not wait its turn, it is told
        no (in half-open the first one is the single trial).
        """
        if self.breaker.probe_permit.locked() or self.breaker.state == "open":
            return False
        async with self.breaker.probe_permit:
            try:
                async with asyncio.timeout(self.probe_timeout_s):
                    await check()
            except TimeoutError:
                self.breaker.record_failure(
                    DeadlineExceeded("health probe timed out", ambiguous=False))
                return False
            except OperatorUnavailable as exc:
                self.breaker.record_failure(exc)
                return False
            self.breaker.record_success()
            return True

    @property
    def probe_timeout_s(self) -> float:
        return min(self.timeout_s, 1.0)
