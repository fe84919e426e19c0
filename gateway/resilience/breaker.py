"""One circuit breaker per operator: pybreaker, plus what it lacks.

pybreaker counts consecutive failures and trips; it does not grow its open time,
its half-open state admits every caller, and an exception it is told to ignore
counts as a success (a cancelled call would reset the failure count). So the call
itself runs outside pybreaker, and only its outcome is fed through
`with breaker.calling()`: operator failures as failures, answers as successes,
cancellations and bugs not at all. The open time grows with jitter on repeated
trips up to a cap, and the half-open trial is a single probe that only the prober
runs (claims arriving meanwhile are queued). pybreaker's own reset timeout is set
out of reach so that it never half-opens by itself.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast

import pybreaker

from adapters.base import OperatorUnavailable

BreakerState = Literal["closed", "open", "half_open"]
NEVER = 10**9  # seconds: pybreaker must never half-open on its own
STABLE_AFTER_S = 300.0  # closed this long, the next trip starts from the base open time


def counts_as_failure(exc: BaseException) -> bool:
    """Only an operator's unavailability trips the breaker; cancellation and bugs do not."""
    return isinstance(exc, OperatorUnavailable | TimeoutError)


@dataclass(slots=True)
class BreakerSnapshot:
    state: str
    since: datetime
    open_until: float | None
    trips: int


class OperatorBreaker:
    """Breaker state for one operator; transitions are reported to `on_change`."""

    def __init__(
        self,
        name: str,
        *,
        fail_max: int,
        reset_s: float,
        reset_max_s: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.reset_s = reset_s
        self.reset_max_s = reset_max_s
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=NEVER,
            exclude=[lambda exc: not counts_as_failure(exc)],
            name=name,
            throw_new_error_on_trip=False,
        )
        self.breaker.add_listener(_Listener(self))
        self.trips = 0
        self._requested_open_for: float | None = None
        self.open_until: float | None = None
        self.since = datetime.now(UTC)
        self._closed_at = clock()
        self.probe_permit = asyncio.Lock()
        self.on_change: list[Callable[[OperatorBreaker, str], None]] = []
        self.last_failure_at: datetime | None = None
        self.last_success_at: datetime | None = None

    @property
    def state(self) -> BreakerState:
        """closed, open or half_open: pybreaker's state names, in Python's spelling."""
        return cast(BreakerState, str(self.breaker.current_state).replace("-", "_"))

    @property
    def is_closed(self) -> bool:
        return self.state == "closed"

    def probe_due(self) -> bool:
        return self.state == "open" and (self.open_until is None or
                                         self._clock() >= self.open_until)

    def next_open_time(self) -> float:
        """The open time for this trip: doubled per repeated trip, capped, with ±20 % jitter."""
        base: float = min(self.reset_s * 2 ** max(self.trips - 1, 0), self.reset_max_s)
        return base * self._rng.uniform(0.8, 1.2)

    # Transitions, whether seen here or learnt from another instance.
    def trip(self, open_for: float | None = None) -> None:
        """Open now (another instance saw the outage, or a probe failed)."""
        self._requested_open_for = open_for
        if self.state != "open":
            self.breaker.open()
        else:
            self._opened("open")

    def _opened(self, previous: str) -> None:
        if previous == "closed" and self._clock() - self._closed_at > STABLE_AFTER_S:
            self.trips = 0  # a new outage after a stable period starts from the base time
        self.trips += 1
        open_for, self._requested_open_for = self._requested_open_for, None
        self.open_until = self._clock() + (open_for if open_for is not None
                                           else self.next_open_time())

    def reset(self) -> None:
        if self.state != "closed":
            self.breaker.close()

    def half_open(self) -> None:
        self.breaker.half_open()

    def snapshot(self) -> BreakerSnapshot:
        return BreakerSnapshot(self.state, self.since, self.open_until, self.trips)

    def record_success(self) -> None:
        """The operator answered. Ignored while open: only the trial may close it."""
        if self.state != "open":
            with self.breaker.calling():
                pass

    def record_failure(self, failure: BaseException) -> None:
        """The operator failed. Ignored while already open."""
        if self.state == "open":
            return
        try:
            with self.breaker.calling():
                raise failure
        except type(failure):
            pass

    def _changed(self, previous: str, new_state: str) -> None:
        self.since = datetime.now(UTC)
        if new_state == "open":
            self._opened(previous)
        elif new_state == "closed":
            self._closed_at = self._clock()
            self.open_until = None
        for callback in self.on_change:
            callback(self, new_state)


class _Listener(pybreaker.CircuitBreakerListener):
    def __init__(self, owner: OperatorBreaker) -> None:
        self.owner = owner

    def state_change(self, cb: pybreaker.CircuitBreaker,
                     old_state: pybreaker.CircuitBreakerState | None,
                     new_state: pybreaker.CircuitBreakerState) -> None:
        previous = str(old_state.name).replace("-", "_") if old_state else "closed"
        self.owner._changed(previous, str(new_state.name).replace("-", "_"))

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.owner.last_failure_at = datetime.now(UTC)

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self.owner.last_success_at = datetime.now(UTC)
