"""The breaker, the guard and the prober, with fake adapter calls (no network)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from adapters.base import OperatorRejected, OperatorUnavailable
from gateway.resilience.breaker import OperatorBreaker
from gateway.resilience.guard import BreakerOpen, DeadlineExceeded, Guard
from gateway.resilience.operators import Operator
from gateway.resilience.prober import probe_once
from gateway.settings import OperatorSettings

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_breaker(fail_max: int = 3, **kwargs: Any) -> OperatorBreaker:
    kwargs.setdefault("rng", random.Random(7))  # noqa: S311 - seeded jitter
    return OperatorBreaker("opera", fail_max=fail_max, reset_s=kwargs.pop("reset_s", 10),
                           reset_max_s=kwargs.pop("reset_max_s", 35), **kwargs)


def make_guard(breaker: OperatorBreaker, **kwargs: Any) -> Guard:
    kwargs.setdefault("timeout_s", 0.5)
    kwargs.setdefault("deadline_s", 2.0)
    return Guard(breaker, rng=random.Random(3), **kwargs)  # noqa: S311 - seeded


class Script:
    """An adapter call that plays a list of outcomes: an exception to raise or a value."""

    def __init__(self, *outcomes: Any, delay_s: float = 0.0) -> None:
        self.outcomes = list(outcomes)
        self.delay_s = delay_s
        self.started_at: list[float] = []

    @property
    def calls(self) -> int:
        return len(self.started_at)

    async def __call__(self) -> Any:
        self.started_at.append(asyncio.get_running_loop().time())
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def down(ambiguous: bool = False, retry_after_s: float | None = None) -> OperatorUnavailable:
    return OperatorUnavailable("down", ambiguous=ambiguous, retry_after_s=retry_after_s)


async def cancelled_midway(run: Callable[[], Awaitable[Any]], started: asyncio.Event) -> None:
    task = asyncio.create_task(run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def hanging(started: asyncio.Event) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        started.set()
        await asyncio.sleep(10)
    return call


# --- the breaker trips and then refuses -------------------------------------------------

async def test_opens_after_fail_max_consecutive_failures_then_refuses_without_calling() -> None:
    breaker = make_breaker(fail_max=3)
    guard = make_guard(breaker, max_attempts=1)
    call = Script(down())
    for _ in range(3):
        with pytest.raises(OperatorUnavailable) as caught:
            await guard.call(call)
        assert not isinstance(caught.value, BreakerOpen)
    assert breaker.state == "open"
    with pytest.raises(BreakerOpen):
        await guard.call(call)
    assert call.calls == 3


async def test_a_success_in_between_resets_the_consecutive_count() -> None:
    breaker = make_breaker(fail_max=3)
    guard = make_guard(breaker, max_attempts=1)
    call = Script(down(), down(), "ok", down(), down())
    for _ in range(5):
        try:
            await guard.call(call)
        except OperatorUnavailable:
            pass
    assert breaker.is_closed and breaker.breaker.fail_counter == 2


async def test_tripping_during_retries_ends_with_breaker_open() -> None:
    breaker = make_breaker(fail_max=2)
    guard = make_guard(breaker, max_attempts=3)
    call = Script(down())
    with pytest.raises(BreakerOpen):
        await guard.call(call)
    assert call.calls == 2 and breaker.state == "open"


# --- what counts as a failure -------------------------------------------------------------

async def test_a_cancelled_caller_is_not_a_failure() -> None:
    breaker = make_breaker(fail_max=1)
    guard = make_guard(breaker)
    started = asyncio.Event()
    await cancelled_midway(lambda: guard.call(hanging(started)), started)
    assert breaker.is_closed and breaker.breaker.fail_counter == 0


async def test_a_cancelled_caller_leaves_the_failure_count_unchanged() -> None:
    breaker = make_breaker(fail_max=3)
    guard = make_guard(breaker, max_attempts=1)
    for _ in range(2):
        with pytest.raises(OperatorUnavailable):
            await guard.call(Script(down()))
    started = asyncio.Event()
    await cancelled_midway(lambda: guard.call(hanging(started)), started)
    assert breaker.breaker.fail_counter == 2


async def test_a_cancelled_trial_does_not_close_the_breaker() -> None:
    breaker = make_breaker()
    breaker.trip(open_for=0)
    breaker.half_open()
    started = asyncio.Event()
    await cancelled_midway(lambda: make_guard(breaker).probe(hanging(started)), started)
    assert not breaker.is_closed


async def test_a_per_attempt_timeout_is_a_failure_reported_ambiguous() -> None:
    breaker = make_breaker(fail_max=3)
    guard = make_guard(breaker, timeout_s=0.05, deadline_s=1.0)
    call = Script("late", delay_s=1.0)
    with pytest.raises(DeadlineExceeded) as caught:
        await guard.call(call)
    assert caught.value.ambiguous
    assert call.calls == 1  # ambiguous and not idempotent: not resent
    assert breaker.breaker.fail_counter == 1


async def test_a_rejection_is_not_retried_and_not_a_failure() -> None:
    breaker = make_breaker(fail_max=1)
    guard = make_guard(breaker)
    call = Script(OperatorRejected("R01", "unknown member"))
    with pytest.raises(OperatorRejected):
        await guard.call(call, idempotent=True)
    assert call.calls == 1
    assert breaker.is_closed and breaker.breaker.fail_counter == 0


async def test_a_bug_is_not_retried_and_not_a_failure() -> None:
    breaker = make_breaker(fail_max=1)
    call = Script(ValueError("bug"))
    with pytest.raises(ValueError):
        await make_guard(breaker).call(call, idempotent=True)
    assert call.calls == 1 and breaker.is_closed


# --- retries ---------------------------------------------------------------------------------

async def test_unavailable_and_not_ambiguous_is_retried() -> None:
    call = Script(down(), down(), "ok")
    assert await make_guard(make_breaker(fail_max=5)).call(call) == "ok"
    assert call.calls == 3


async def test_ambiguous_is_not_retried_on_a_non_idempotent_call() -> None:
    call = Script(down(ambiguous=True), "ok")
    with pytest.raises(OperatorUnavailable):
        await make_guard(make_breaker(fail_max=5)).call(call)
    assert call.calls == 1


async def test_ambiguous_is_retried_on_an_idempotent_call() -> None:
    call = Script(down(ambiguous=True), "ok")
    assert await make_guard(make_breaker(fail_max=5)).call(call, idempotent=True) == "ok"
    assert call.calls == 2


async def test_retries_are_bounded_by_attempts() -> None:
    call = Script(down())
    with pytest.raises(OperatorUnavailable):
        await make_guard(make_breaker(fail_max=10), max_attempts=3).call(call)
    assert call.calls == 3


async def test_retry_after_is_honoured() -> None:
    call = Script(down(retry_after_s=0.2), "ok")
    assert await make_guard(make_breaker()).call(call) == "ok"
    assert call.started_at[1] - call.started_at[0] >= 0.2


async def test_total_time_is_bounded_by_the_deadline() -> None:
    loop = asyncio.get_running_loop()
    hung = Script("late", delay_s=5)
    guard = make_guard(make_breaker(fail_max=10), timeout_s=0.2, deadline_s=0.5,
                       max_attempts=10)
    began = loop.time()
    with pytest.raises(DeadlineExceeded):
        await guard.call(hung, idempotent=True)
    assert loop.time() - began < 0.5 + 0.05

    busy = Script(down(retry_after_s=0.15))
    began = loop.time()
    with pytest.raises(OperatorUnavailable):
        await guard.call(busy)
    assert loop.time() - began < 0.5 and busy.calls == 4  # at 0, 0.15, 0.30, 0.45 s


# --- open time ---------------------------------------------------------------------------------

async def fail_trial(breaker: OperatorBreaker, clock: FakeClock) -> float:
    """Let the open time pass, run a failed half-open trial; return the new open time."""
    clock.now = breaker.open_until or clock.now
    breaker.half_open()
    assert not await make_guard(breaker).probe(Script(down()))
    assert breaker.state == "open" and breaker.open_until is not None
    return breaker.open_until - clock.now


def within_jitter(value: float, base: float) -> bool:
    return 0.8 * base <= value <= 1.2 * base


async def test_open_time_grows_on_repeated_trips_up_to_the_cap() -> None:
    clock = FakeClock()
    rng = random.Random(42)  # noqa: S311 - seeded jitter
    breaker = make_breaker(reset_s=10, reset_max_s=35, clock=clock, rng=rng)
    breaker.trip()
    assert breaker.open_until is not None and within_jitter(breaker.open_until, 10)
    opens = [await fail_trial(breaker, clock) for _ in range(3)]
    assert within_jitter(opens[0], 20)
    assert within_jitter(opens[1], 35) and within_jitter(opens[2], 35)
    assert len({round(x, 6) for x in opens[1:]}) == 2  # jittered, not fixed


async def test_open_time_starts_again_after_a_stable_period() -> None:
    clock = FakeClock()
    breaker = make_breaker(reset_s=10, clock=clock)
    breaker.trip()
    await fail_trial(breaker, clock)
    breaker.reset()
    clock.now += 301
    breaker.trip()
    assert breaker.trips == 1
    assert within_jitter(breaker.open_until - clock.now, 10)  # type: ignore[operator]


async def test_open_time_grows_in_a_gateway_running_for_a_while() -> None:
    clock = FakeClock()
    breaker = make_breaker(reset_s=10, clock=clock)
    clock.now = 1000.0  # closed since start, 1000 s ago
    breaker.trip()
    assert within_jitter(await fail_trial(breaker, clock), 20)


# --- the single half-open trial ----------------------------------------------------------------

async def test_two_concurrent_probes_in_half_open_run_one_check() -> None:
    breaker = make_breaker()
    breaker.trip(open_for=0)
    breaker.half_open()
    guard = make_guard(breaker)
    check = Script(None, delay_s=0.05)
    # The second caller is told no at once rather than running a second trial.
    assert await asyncio.gather(guard.probe(check), guard.probe(check)) == [True, False]
    assert check.calls == 1
    assert breaker.state == "closed"


async def test_a_probe_waiting_behind_a_failed_trial_returns_false() -> None:
    breaker = make_breaker()
    breaker.trip(open_for=0)
    breaker.half_open()
    guard = make_guard(breaker)
    check = Script(down(), delay_s=0.05)
    results = await asyncio.gather(guard.probe(check), guard.probe(check),
                                   return_exceptions=True)
    assert check.calls == 1
    assert results == [False, False], results


class FakeAdapter:
    def __init__(self, *health: Any, delay_s: float = 0.0) -> None:
        self.health = Script(*health, delay_s=delay_s)


def make_operator(breaker: OperatorBreaker, adapter: FakeAdapter) -> Operator:
    settings = OperatorSettings(name="opera", adapter="reference", base_url="http://opera.test",
                                insurers=["80*"])
    return Operator(settings=settings, adapter=adapter, breaker=breaker,  # type: ignore[arg-type]
                    guard=make_guard(breaker))


async def test_two_concurrent_prober_rounds_run_one_trial() -> None:
    breaker = make_breaker()
    breaker.trip(open_for=0)
    operator = make_operator(breaker, FakeAdapter(None, delay_s=0.05))
    await asyncio.gather(probe_once(operator), probe_once(operator))
    assert operator.adapter.health.calls == 1  # type: ignore[attr-defined]
    assert breaker.is_closed


# --- the prober -----------------------------------------------------------------------------------

async def test_prober_trips_a_closed_breaker_after_two_failed_checks() -> None:
    breaker = make_breaker(fail_max=5)
    adapter = FakeAdapter(down())
    await probe_once(make_operator(breaker, adapter))
    assert adapter.health.calls == 2 and breaker.state == "open"


async def test_prober_leaves_a_closed_breaker_after_one_failed_check() -> None:
    breaker = make_breaker(fail_max=5)
    adapter = FakeAdapter(down(), None)
    await probe_once(make_operator(breaker, adapter))
    assert adapter.health.calls == 2 and breaker.is_closed


async def test_prober_half_opens_a_due_breaker_and_closes_it_on_success() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock=clock)
    breaker.trip(open_for=5)
    adapter = FakeAdapter(None)
    operator = make_operator(breaker, adapter)
    await probe_once(operator)
    assert adapter.health.calls == 0 and breaker.state == "open"  # not due yet
    clock.now = 5.0
    states: list[str] = []
    breaker.on_change.append(lambda _, state: states.append(state))
    await probe_once(operator)
    assert adapter.health.calls == 1 and breaker.is_closed
    assert states == ["half_open", "closed"]


async def test_prober_reopens_a_due_breaker_on_a_failed_trial() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock=clock, reset_s=10)
    breaker.trip(open_for=5)
    clock.now = 5.0
    await probe_once(make_operator(breaker, FakeAdapter(down())))
    assert breaker.state == "open" and breaker.open_until is not None
    assert within_jitter(breaker.open_until - clock.now, 20)
