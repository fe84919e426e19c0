"""The drain: one worker per operator replays queued claims once the operator is back.

Oldest first, at most `drain_per_s` in total across every instance (the send
times come from the operator's shared schedule in the database), ramping from
10 % to 100 % over `drain_ramp_s` after a recovery. It sends nothing while the
operator is paused or its breaker is not closed, and stops at once when the
breaker opens: claims leased but not yet sent go back to the queue untouched.
A claim whose earlier attempt may have reached the operator is looked up first.

Every few seconds, whatever the breaker, the worker also sweeps claims left `pending`
by a sender that died (`gateway.queue.abandoned`). Stopping, it gives back the claims
it leased but had not sent; those it was sending the lifespan requeues, looked up first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial

import structlog

from adapters.base import OperatorRejected, OperatorUnavailable
from gateway.claims import transitions
from gateway.claims.cancel import confirm_cancelled
from gateway.claims.operator_texts import refusal_detail
from gateway.claims.payload import payload_context
from gateway.claims.service import LEASE_GRACE_S, wire_claim
from gateway.context import AppContext
from gateway.observability.metrics import CLAIM_OUTCOMES, DRAIN_RATE, DRAIN_SENT
from gateway.queue import abandoned, repository
from gateway.queue.repository import Lease
from gateway.resilience.guard import BreakerOpen
from gateway.resilience.operators import Operator
from gateway.security.crypto import DecryptionError
from gateway.storage.health import DatabaseUnavailable
from gateway.storage.models import Claim, utcnow
from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)
IDLE_S = 0.5
SWEEP_EVERY_S = 2.0
SWEEP_BATCH = 100
MAX_BATCH = 50
SEND_CONCURRENCY = 16
MAX_IN_FLIGHT = 4 * MAX_BATCH  # sleeping to their slot, sending, or recording


class DrainWorker:
    def __init__(self, ctx: AppContext, operator: Operator) -> None:
        self.ctx = ctx
        self.operator = operator
        self.wake = asyncio.Event()
        self.recovered_at = time.monotonic()
        self.just_recovered = False
        self._gate = asyncio.Semaphore(SEND_CONCURRENCY)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._leased: set[str] = set()  # claim ids leased and not finished
        self._sending: set[str] = set()  # ... of which the send has begun
        self._swept_at = 0.0
        operator.breaker.on_change.append(self._breaker_changed)

    def _breaker_changed(self, _: object, state: str) -> None:
        if state == "closed":
            self.recovered_at = time.monotonic()
            self.just_recovered = True
            self.wake.set()

    def current_rate(self) -> float:
        """Claims per second now: `drain_per_s`, ramped linearly from 10 % after recovery."""
        settings = self.operator.settings
        full = settings.drain_per_s
        if settings.drain_ramp_s <= 0:
            return full
        elapsed = time.monotonic() - self.recovered_at
        return full * min(1.0, 0.1 + 0.9 * elapsed / settings.drain_ramp_s)

    def may_send(self) -> bool:
        return self.operator.breaker.is_closed

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            await self._run(stopping)
        finally:
            await self.stop()

    async def _run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                worked = await self.step()
            except DatabaseUnavailable:
                worked = False  # logged once by the database's health: wait and try again
            except Exception:  # noqa: BLE001 - the drain must outlive one bad batch
                log.exception("drain.step_failed", operator=self.operator.name)
                worked = False
            if not worked:
                self.wake.clear()
                try:
                    async with asyncio.timeout(IDLE_S):
                        await self.wake.wait()
                except TimeoutError:
                    pass

    async def step(self) -> bool:
        """Lease one batch and send it; False when there was nothing to do."""
        name = self.operator.name
        await self.sweep_abandoned()
        if not self.may_send():
            return False
        if len(self._in_flight) >= MAX_IN_FLIGHT:  # a slow operator: let the sends catch up
            await asyncio.sleep(0.05)
            return True
        if await self.ctx.db.read(lambda session: repository.is_paused(session, name)):
            return False
        if self.just_recovered:
            self.just_recovered = False
            await self.ctx.db.write(lambda session: repository.make_due(session, name, utcnow()))
        rate = self.current_rate()
        DRAIN_RATE.labels(name).set(rate)
        limit = max(1, min(MAX_BATCH, round(rate)))
        leases = await self.ctx.db.write(lambda session: repository.lease_batch(
            session, operator=name, owner=self.ctx.instance_id, limit=limit, now=utcnow(),
            interval_s=1.0 / rate, send_timeout_s=self._lease_s(),
        ))
        cancelled = await self._send_cancellations()
        if not leases:
            return cancelled
        # The sends run on while the next batch is leased once this one's last slot comes,
        # so the pace does not stall at every batch boundary.
        for lease in leases:
            self._leased.add(lease.claim.id)
            task = asyncio.create_task(self._send_when_due(lease))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        last_slot = (leases[-1].send_at - utcnow()).total_seconds()
        if last_slot > 0:
            await asyncio.sleep(last_slot)
        return True

    def _lease_s(self) -> float:
        """A lease lasts two deadlines and the grace from its send time: a send that starts
        up to one deadline late still holds it to the end without renewing it."""
        return 2 * self.operator.settings.deadline_s + LEASE_GRACE_S

    async def sweep_abandoned(self, *, force: bool = False) -> int:
        """Requeue this operator's claims whose sender died (lease expired), at most every
        SWEEP_EVERY_S; a read first, so an idle sweep writes nothing."""
        if not force and time.monotonic() - self._swept_at < SWEEP_EVERY_S:
            return 0
        self._swept_at = time.monotonic()
        name, now = self.operator.name, utcnow()
        if not await self.ctx.db.read(lambda s: bool(repository.lease_expired(s, name, now, 1))):
            return 0

        def requeue_expired(session: UnitOfWork) -> int:
            claims = repository.lease_expired(session, name, utcnow(), SWEEP_BATCH)
            for claim in claims:
                abandoned.requeue(session, claim, self.ctx.receipts, self.operator.settings)
            return len(claims)

        count = await self.ctx.db.write(requeue_expired)
        if count:
            log.warning("drain.swept_abandoned", operator=name, claims=count)
        return count

    async def stop(self) -> None:
        """Cancel the sends still running; give back the claims leased but never sent (the
        lifespan requeues, looked up first, those whose send had begun)."""
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        unsent = sorted(self._leased - self._sending)
        self._leased.clear()
        self._sending.clear()
        if unsent:
            owner = self.ctx.instance_id
            try:
                await self.ctx.db.write(lambda s: repository.release_unsent(s, unsent, owner))
            except DatabaseUnavailable:
                pass  # their leases expire; the sweep requeues them, looked up first

    async def _release(self, claim_id: str) -> None:
        owner = self.ctx.instance_id
        await self.ctx.db.write(lambda s: repository.release_unsent(s, [claim_id], owner))

    async def _send_when_due(self, lease: Lease) -> None:
        try:
            await self._send_in_turn(lease)
        except DatabaseUnavailable:
            pass  # logged once by the database's health; the lease expires, the sweep requeues
        # (cancelled: stop() still needs to know what this task held)
        self._leased.discard(lease.claim.id)
        self._sending.discard(lease.claim.id)

    async def _send_in_turn(self, lease: Lease) -> None:
        delay = (lease.send_at - utcnow()).total_seconds()
        if delay > 0:
            await asyncio.sleep(delay)
        await self._send(lease.claim)

    async def _hold_lease(self, claim: Claim) -> bool:
        """Waiting for a slot may have eaten into the lease: if what is left might not cover
        the send, renew it; False if it expired and another sender took the claim over."""
        now = utcnow()
        left = claim.lease_until - now if claim.lease_until else timedelta(0)
        if left >= timedelta(seconds=self.operator.settings.deadline_s + LEASE_GRACE_S):
            return True
        until, owner = now + timedelta(seconds=self._lease_s()), self.ctx.instance_id
        if not await self.ctx.db.write(
                lambda s: repository.renew_lease(s, claim.id, owner, until)):
            return False
        claim.lease_until = until  # the settle that follows is guarded by this exact lease
        return True

    async def _send(self, claim: Claim) -> None:
        """Send (or look up) the claim while holding one of SEND_CONCURRENCY slots, then
        record the outcome with the slot given back: the operator sees at most that many
        calls at once, and a slow commit does not hold its slot."""
        adapter, guard = self.operator.adapter, self.operator.guard
        try:
            async with self._gate:
                if not self.may_send():
                    await self._release(claim.id)
                    return
                if not await self._hold_lease(claim):
                    return
                self._sending.add(claim.id)
                outcome = None
                if claim.maybe_sent:
                    outcome = await guard.call(lambda: adapter.lookup_claim(claim.id),
                                               idempotent=True)
                if outcome is None:
                    body = self.ctx.cipher.decrypt_json(claim.payload_enc,
                                                        context=payload_context(claim.id))
                    wire = wire_claim(claim.id, body)
                    outcome = await guard.call(lambda: adapter.submit_claim(wire))
        except BreakerOpen:
            await self._release(claim.id)
            return
        except OperatorUnavailable as exc:
            reason, ambiguous = exc.reason, exc.ambiguous
            await self._finish(claim.id, lambda s, c: transitions.retry_later(
                s, c, reason, ambiguous=ambiguous,
                max_attempts=self.operator.settings.max_attempts,
                max_age=timedelta(seconds=self.operator.settings.max_queue_age_s)))
            return
        except OperatorRejected as exc:
            detail = refusal_detail(exc.code)
            await self._finish(claim.id, lambda s, c: transitions.refuse(s, c, detail))
            return
        except DecryptionError:  # its data key is missing: only operations staff can help
            detail = "claim data unreadable (data key unknown or shredded)"
            await self._finish(claim.id, lambda s, c: transitions.refuse(s, c, detail))
            return
        DRAIN_SENT.labels(self.operator.name).inc()
        await self._finish(claim.id, lambda s, c: transitions.settle(s, c, outcome),
                           fast=transitions.sent_answer(claim, outcome, claim.first_http_status))

    async def _finish(self, claim_id: str, move: Callable[[UnitOfWork, Claim], object], *,
                      fast: transitions.SentAnswer | None = None) -> None:
        """Record the outcome of a send: `fast` first when given (one guarded UPDATE, see
        `transitions.settle_sent`, which the write group may run ahead), else or if it
        finds the claim moved, `move` on the claim loaded under our lease."""
        owner = self.ctx.instance_id

        def apply(session: UnitOfWork) -> str | None:
            if fast is not None and (settled := transitions.settle_sent(session, fast)):
                return settled.status
            if session.defers:  # the general path loads and flushes: not in a deferred work
                session.require_flushed()
            claim = repository.load_leased(session, claim_id, owner)
            if claim is None:
                return None  # our lease expired and another sender took over
            move(session, claim)
            return claim.status

        status = await self.ctx.db.write(apply, deferred=fast is not None,
                                         ahead=fast.ahead if fast is not None else None)
        if status is not None:
            CLAIM_OUTCOMES.labels(self.operator.name, status).inc()
            log.info("drain.claim", claim_id=claim_id, status=status)

    async def _send_cancellations(self) -> bool:
        name = self.operator.name
        claims = await self.ctx.db.read(
            lambda session: repository.pending_cancellations(session, name, 10))
        for claim in claims:
            try:
                await self.operator.guard.call(
                    partial(self.operator.adapter.cancel_claim, claim.id), idempotent=True)
            except (OperatorUnavailable, OperatorRejected):
                return False
            await self.ctx.db.write(partial(confirm_cancelled, claim_id=claim.id))
            CLAIM_OUTCOMES.labels(name, "cancelled").inc()
        return bool(claims)
