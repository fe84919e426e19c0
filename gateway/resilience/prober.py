"""The active health probe: finds a quiet operator's outage and its recovery.

Every `probe_interval_s` (sooner when an open breaker's time is up) it calls
`GET /health` through the breaker. Closed: a failed probe is confirmed at once
by a second one, and two in a row trip the breaker, so an outage with no claim
traffic is seen within about one interval. Open and due: the breaker goes
half-open and this probe is the single trial that closes or reopens it.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from gateway.resilience.operators import Operator

log = structlog.get_logger(__name__)


async def probe_once(operator: Operator) -> None:
    breaker, guard = operator.breaker, operator.guard
    if breaker.is_closed:
        if await guard.probe(operator.adapter.health):
            return
        if breaker.is_closed and not await guard.probe(operator.adapter.health):
            if breaker.is_closed:
                log.warning("breaker.probe_tripped", operator=operator.name)
                breaker.trip()
    elif breaker.probe_due() and not breaker.probe_permit.locked():
        breaker.half_open()  # the probe below is the single trial
        recovered = await guard.probe(operator.adapter.health)
        log.info("breaker.trial", operator=operator.name, recovered=recovered)


def seconds_until_next_probe(operator: Operator) -> float:
    interval = operator.settings.probe_interval_s
    open_until = operator.breaker.open_until
    if operator.breaker.state == "open" and open_until is not None:
        return max(0.05, min(interval, open_until - time.monotonic()))
    return interval


async def run_prober(operator: Operator, stopping: asyncio.Event) -> None:
    """Probe until `stopping` is set; never raises."""
    while not stopping.is_set():
        try:
            async with asyncio.timeout(seconds_until_next_probe(operator)):
                await stopping.wait()
            return
        except TimeoutError:
            pass
        try:
            await probe_once(operator)
        except Exception:  # noqa: BLE001 - the prober must outlive any one bad probe
            log.exception("breaker.probe_failed", operator=operator.name)
