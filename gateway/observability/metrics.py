"""Prometheus metrics: counters updated where things happen, gauges read at scrape time.

Counters live in one module-level registry (they count for the whole process);
queue and breaker gauges are computed from the database and the breakers on each
scrape, so every instance reports the same queue. Under `gateway serve --workers N`
prometheus_client's multiprocess mode is on (`PROMETHEUS_MULTIPROC_DIR`, set by the
supervisor: `gateway.web.workers`): each worker's counters go to files there, and a
scrape, whichever worker answers, adds up those of every worker.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

REGISTRY = CollectorRegistry(auto_describe=True)
CLAIM_OUTCOMES = Counter(
    "gateway_claims_total", "Claims by operator and outcome", ["operator", "outcome"],
    registry=REGISTRY,
)
OPERATOR_ATTEMPTS = Counter(
    "gateway_operator_attempts_total", "Calls to operators by result", ["operator", "result"],
    registry=REGISTRY,
)
DRAIN_SENT = Counter(
    "gateway_drain_sent_total", "Queued claims sent by the drain", ["operator"],
    registry=REGISTRY,
)
DRAIN_RATE = Gauge(
    "gateway_drain_rate_per_second", "The drain's current pace (ramping after recovery)",
    ["operator"], registry=REGISTRY, multiprocess_mode="livemax",  # workers: the fastest
)
RECEIPTS = Counter(
    "gateway_receipts_total", "Provisional receipts issued", ["operator", "basis"],
    registry=REGISTRY,
)
RIGHTS_BUDGET_EXCEEDED = Counter(
    "gateway_rights_budget_exceeded_total",
    "Rights lookups refused over a distinct-people budget (the key is suspended), by the "
    "budget's scope: key or pharmacy; never a key id", ["scope"], registry=REGISTRY,
)
for _scope in ("key", "pharmacy"):
    RIGHTS_BUDGET_EXCEEDED.labels(_scope)  # both series exist from the start, at 0
RATE_LIMITED = Counter(
    "gateway_rate_limited_total", "Requests refused with 429, by endpoint class",
    ["endpoint_class"], registry=REGISTRY,
)
CREDENTIAL_TAMPER = Counter(
    "gateway_credential_tamper_total",
    "Key, user or session rows refused because their MAC does not match (altered by hand)",
    ["kind"], registry=REGISTRY,
)
CONSOLE_LOGINS = Counter(
    "gateway_console_logins_total", "Console login attempts by method and outcome",
    ["method", "outcome"], registry=REGISTRY,
)
REQUEST_LATENCY = Histogram(
    "gateway_request_duration_seconds", "HTTP request latency by route", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
# The database writer: every write of a process runs in one thread, works waiting during a
# commit sharing the next one (gateway.storage.db). Seconds spent over seconds elapsed is
# how busy it is; near 1 the claims queue behind it, whatever else has cores to spare.
WRITE_GROUP_SECONDS = Histogram(
    "gateway_write_group_seconds",
    "Time one write group (works sharing a transaction) held the writer, commit included",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1), registry=REGISTRY,
)
WRITE_GROUP_WORKS = Histogram(
    "gateway_write_group_works", "Works (a claim stored, an answer recorded...) per write group",
    buckets=(1, 2, 4, 8, 16, 32, 64), registry=REGISTRY,
)
BREAKER_CODES = {"closed": 0, "half_open": 1, "open": 2}


class Snapshot(Collector):
    """Gauges from a scrape-time snapshot of the queue and the breakers."""

    def __init__(self, queue: dict[str, dict[str, Any]], breakers: dict[str, str],
                 outstanding: dict[str, int]) -> None:
        self.queue, self.breakers, self.outstanding = queue, breakers, outstanding

    def collect(self) -> Iterable[GaugeMetricFamily]:
        now = datetime.now(UTC)
        state = GaugeMetricFamily("gateway_breaker_state",
                                  "0 closed, 1 half-open, 2 open", labels=["operator"])
        depth = GaugeMetricFamily("gateway_queue_depth", "Claims waiting", labels=["operator"])
        pending = GaugeMetricFamily("gateway_queue_pending", "Claims being sent",
                                    labels=["operator"])
        failed = GaugeMetricFamily("gateway_queue_failed", "Claims given up on",
                                   labels=["operator"])
        oldest = GaugeMetricFamily("gateway_queue_oldest_age_seconds",
                                   "Age of the oldest waiting claim", labels=["operator"])
        exposure = GaugeMetricFamily("gateway_provisional_outstanding_cents",
                                     "AMC cents promised by open provisional receipts",
                                     labels=["operator"])
        for operator, code in self.breakers.items():
            stats = self.queue.get(operator, {})
            state.add_metric([operator], BREAKER_CODES.get(code, 2))
            depth.add_metric([operator], stats.get("queued", 0))
            pending.add_metric([operator], stats.get("pending", 0))
            failed.add_metric([operator], stats.get("failed", 0))
            first = stats.get("oldest")
            oldest.add_metric([operator], (now - first).total_seconds() if first else 0.0)
            exposure.add_metric([operator], self.outstanding.get(operator, 0))
        yield from (state, depth, pending, failed, oldest, exposure)


def scrape_allowed(token: str, authorization: str | None) -> bool:
    """No token configured: anyone scrapes; else `Bearer <token>`, compared in constant time."""
    if not token:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode())


# read once, as prometheus_client itself does when it is imported
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def counted() -> CollectorRegistry:
    """This process's counters, or with workers every worker's, added up."""
    if not MULTIPROCESS_DIR:
        return REGISTRY
    workers = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(workers, path=MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return workers


def render(snapshot: Snapshot) -> bytes:
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(snapshot)
    return generate_latest(counted()) + generate_latest(scrape)


class LatencyMiddleware:
    """Times every HTTP request by its route template (never by its raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            REQUEST_LATENCY.labels(scope.get("method", ""), template).observe(
                time.perf_counter() - started)


