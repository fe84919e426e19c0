"""The webhook workers: per webhook, the pharmacy's events in order, at least once.

The events table stays the source of truth; a cursor per webhook remembers the last
event the receiver acknowledged, so a restart resends at most the event in flight.
A failed event is retried with backoff and never skipped. A lease on the cursor lets
one instance at a time send for a webhook. A new webhook starts at the newest event:
history is read through the feed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import partial

import httpx
import structlog

from gateway.context import AppContext
from gateway.storage.health import DatabaseUnavailable
from gateway.storage.models import Event, utcnow
from gateway.webhooks import repository
from gateway.webhooks.delivery import Backoff, Hook, deliver
from gateway.webhooks.repository import Pending
from gateway.webhooks.signing import decode_secret

log = structlog.get_logger(__name__)
POLL_S = 0.5
TIMEOUT_S = 5.0
LEASE_S = 15.0
BATCH = 50
SETTLE_S = 10.0  # how long a missing `events.id` may be an uncommitted transaction


def ready(state: Pending, now: datetime, settle_s: float = SETTLE_S) -> Sequence[Event]:
    """The events safe to send now, in order.

    On PostgreSQL ids are taken before commit, so a lower id may still appear; while
    an id is missing, only events older than `settle_s` are sent (SQLite writers are
    serial, so its ranges are always complete).
    """
    if state.complete:
        return state.events
    horizon = now - timedelta(seconds=settle_s)
    sendable: list[Event] = []
    for event in state.events:
        if event.at > horizon:
            break
        sendable.append(event)
    return sendable


class WebhookWorker:
    def __init__(self, ctx: AppContext, hook: Hook, client: httpx.AsyncClient, *,
                 backoff: Backoff, poll_s: float) -> None:
        self.ctx, self.hook, self.client = ctx, hook, client
        self.backoff, self.poll_s = backoff, poll_s
        self.lease_until: datetime | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                pause = await self.step()
            except DatabaseUnavailable:
                pause = self.poll_s  # logged once by the database's health
            except Exception:  # noqa: BLE001 - a webhook worker must outlive one bad step
                log.exception("webhook.step_failed", webhook=self.hook.key[:12])
                pause = self.poll_s
            if pause > 0:
                try:
                    async with asyncio.timeout(pause):
                        await stopping.wait()
                except TimeoutError:
                    pass

    async def _hold_lease(self) -> bool:
        now = utcnow()
        if self.lease_until and self.lease_until - now > timedelta(seconds=LEASE_S / 2):
            return True
        hook, owner = self.hook, self.ctx.instance_id
        held = await self.ctx.db.write(lambda s: repository.take_lease(
            s, key=hook.key, finess=hook.finess, owner=owner, now=now, lease_s=LEASE_S))
        self.lease_until = now + timedelta(seconds=LEASE_S) if held else None
        return held

    async def step(self) -> float:
        """Send what is due; the seconds to wait before the next step."""
        if not await self._hold_lease():
            return self.poll_s
        hook, owner, now = self.hook, self.ctx.instance_id, utcnow()
        state = await self.ctx.db.read(lambda s: repository.pending(
            s, key=hook.key, finess=hook.finess, limit=BATCH, now=now))
        if state is None:
            self.lease_until = None
            return 0
        if state.next_attempt_at is not None and state.next_attempt_at > now:
            return min(self.poll_s, (state.next_attempt_at - now).total_seconds())
        for event in ready(state, now):
            error = await deliver(self.client, hook, event)
            if error is not None:
                attempts = await self.ctx.db.write(partial(
                    repository.failed, key=hook.key, owner=owner, error=error, now=utcnow(),
                    delay_for=self.backoff.delay))
                log.warning("webhook.failed", webhook=hook.key[:12], event_id=event.event_id,
                            error=error, attempts=attempts)
                return 0
            event_id = event.id or 0
            if not await self.ctx.db.write(partial(
                    repository.delivered, key=hook.key, owner=owner, event_id=event_id,
                    now=utcnow())):
                self.lease_until = None
                return self.poll_s
            log.info("webhook.delivered", webhook=hook.key[:12], event_id=event.event_id)
        return 0 if len(state.events) == BATCH and state.complete else self.poll_s


def _hooks(ctx: AppContext) -> list[Hook]:
    hooks: dict[str, Hook] = {}
    for config in ctx.settings.webhooks:
        key = repository.webhook_key(config.finess, config.url)
        if key in hooks:
            log.warning("webhook.duplicate_ignored", webhook=key[:12])
            continue
        hooks[key] = Hook(key, config.finess, config.url,
                          decode_secret(config.secret.get_secret_value()), config.allow_private)
    return list(hooks.values())


async def run_webhooks(
    ctx: AppContext, stopping: asyncio.Event, *,
    backoff: Backoff | None = None, poll_s: float = POLL_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Run every configured webhook until `stopping`; returns at once when there is none."""
    hooks = _hooks(ctx)
    if not hooks:
        return
    async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False,
                                 transport=transport) as client:
        workers = [WebhookWorker(ctx, hook, client, backoff=backoff or Backoff(), poll_s=poll_s)
                   for hook in hooks]
        await asyncio.gather(*(worker.run(stopping) for worker in workers))
