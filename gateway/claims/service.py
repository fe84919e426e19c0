"""Submitting a claim: validate, store durably, then send within the deadline, or queue.

A claim is committed before anything is sent to its operator, so a 201/202 is a
promise that the claim exists; the operator's idempotency key is the claim id,
minted then and never changed. When the operator is paused, its breaker is not
closed, or it gives no answer within `deadline_s`, the claim is queued (202).

The same claim again (same key, or same invoice) finds the stored one. It is "in
flight" (409) only while its first request can still answer, until its deadline plus
grace; after that the first request is taken for dead, and the claim answers as it
stands (see `_replay_unanswered`), so a pharmacy retrying always gets its claim.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy.exc import IntegrityError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from adapters.base import ClaimOutcome, OperatorClaim, OperatorRejected, OperatorUnavailable
from gateway.audit.trail import HEAD_AHEAD
from gateway.claims import repository, transitions
from gateway.claims.operator_texts import refusal_detail
from gateway.claims.payload import payload_context
from gateway.claims.presenter import to_public
from gateway.claims.rules import check_claim_rules
from gateway.claims.schemas import ClaimCreate, ClaimPublic
from gateway.context import AppContext
from gateway.errors import (
    ClaimInFlight,
    DuplicateInvoice,
    Forbidden,
    IdempotencyKeyReused,
    OperatorRefused,
    Unauthorized,
    UnknownInsurer,
    invalid_key,
)
from gateway.identity.principals import is_api_key, is_live
from gateway.observability.metrics import CLAIM_OUTCOMES
from gateway.queue import abandoned
from gateway.queue import repository as queue_repository
from gateway.receipts import repository as receipts_repository
from gateway.resilience.guard import BreakerOpen
from gateway.resilience.operators import Operator
from gateway.security.apikeys import Principal
from gateway.storage.health import DatabaseUnavailable
from gateway.storage.ids import new_ulid
from gateway.storage.models import Claim, Receipt, new_row, utcnow
from gateway.storage.unit import Ahead, Aheads, UnitOfWork

log = structlog.get_logger(__name__)
STORE_ATTEMPTS = 3
LEASE_GRACE_S = 5.0  # a sync sender's lease outlives its deadline by this much
SETTLED = frozenset({"accepted", "rejected"})  # the operator's answer, for good
EXPORTED = "exported"  # handed over in a batch file (gateway.handover)


@dataclass(frozen=True, slots=True)
class SubmitResult:
    claim: ClaimPublic
    http_status: int
    replayed: bool


def new_claim_id() -> str:
    return f"clm_{new_ulid()}"


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def wire_claim(claim_id: str, body: dict[str, object]) -> OperatorClaim:
    return OperatorClaim(idempotency_key=claim_id, body={**body, "claim_id": claim_id})


async def submit(
    *, ctx: AppContext, principal: Principal, claim_in: ClaimCreate, idempotency_key: str | None
) -> SubmitResult:
    check_claim_rules(claim_in)
    if claim_in.dispenser.finess != principal.finess:
        raise Forbidden("dispenser.finess is not the pharmacy this key belongs to")
    operator = ctx.operators.route(claim_in.amc.insurer_number)
    if operator is None:
        raise UnknownInsurer(
            "no operator handles this insurer number",
            errors=[{"field": "amc.insurer_number", "message": "not routed to any operator"}],
        )
    body = claim_in.model_dump(mode="json")
    request_hash = ctx.cipher.index("claim-request", canonical_json(body))
    stored = await _store_or_replay(ctx, principal, claim_in, body, request_hash,
                                    idempotency_key, operator)
    if isinstance(stored, SubmitResult):
        return stored
    claim, receipt = stored
    if claim.status == "queued":
        CLAIM_OUTCOMES.labels(operator.name, "queued").inc()
        return SubmitResult(to_public(claim, ctx.cipher, receipt, ctx.receipts,
                                      nir=claim_in.beneficiary.nir), 202, replayed=False)
    return await _send(ctx, operator, claim, body, nir=claim_in.beneficiary.nir)


async def _store_or_replay(
    ctx: AppContext,
    principal: Principal,
    claim_in: ClaimCreate,
    body: dict[str, object],
    request_hash: str,
    idempotency_key: str | None,
    operator: Operator,
) -> tuple[Claim, Receipt | None] | SubmitResult:
    """Insert the claim (pending, or queued when the operator cannot take it now),
    or answer for the one already holding this key or invoice number."""

    beneficiary_hash = ctx.cipher.index(*claim_in.beneficiary.index_parts)
    # A claim that will be queued gets a receipt decision, which reads the beneficiary's
    # exposure that day: the duplicate check may read it in the same statement (the
    # repository knows when that is safe). The daily cap counts the person: their NIR's
    # hash, whatever birth date or rank.
    exposure_of = ((ctx.cipher.index("nir", claim_in.beneficiary.nir), claim_in.service_date)
                   if operator.settings.provisional != "none"
                   and not operator.breaker.is_closed else None)

    api_key = is_api_key(principal)  # its row is read with the duplicate check
    lookup: dict[str, Any] = {
        "finess": claim_in.dispenser.finess, "invoice_number": claim_in.invoice_number,
        "idempotency_key": idempotency_key, "exposure_of": exposure_of,
        "key_id": principal.key_id if api_key else None, "operator": operator.name}

    def ahead() -> tuple[Ahead, ...]:  # what `store` reads first (PostgreSQL: with others')
        return repository.intake_ahead(**lookup), HEAD_AHEAD

    def store(session: UnitOfWork) -> tuple[Claim, Receipt | None] | SubmitResult:
        read = repository.read_for_intake(session, **lookup)
        # The key may come from a cache (gateway.web.deps.submitter): confirm it here, once
        # per transaction, so a revoked key stores nothing.
        if not session.remember(("key", principal.key_id), lambda: is_live(
                session, principal, ctx.credentials, key_row=read.key_row)):
            raise invalid_key()
        if read.duplicates:
            return _replay(ctx, session, read.duplicates, request_hash, idempotency_key)
        claim = _new_claim(ctx, claim_in, body, request_hash, idempotency_key, operator,
                           beneficiary_hash)
        receipt = None
        paused = queue_repository.is_paused(session, operator.name)
        if paused or not operator.breaker.is_closed:
            claim.first_http_status = 202
            why = "operator paused" if paused else f"operator {operator.breaker.state}"
            step = transitions.enqueue(session, claim, f"received; {why}: queued")
            receipt = ctx.receipts.cover(session, claim, operator.settings, claim_in,
                                         audit=False, step=step)
        else:
            claim.lease_owner = ctx.instance_id
            claim.lease_until = utcnow() + timedelta(
                seconds=operator.settings.deadline_s + LEASE_GRACE_S)
            repository.record(session, claim, "pending", "received")
        # One entry records the submission and, when the claim was queued at once, the
        # receipt issued with it (one chain append on the hot path instead of two).
        ctx.audit_log.append(session, principal, "claim.submit", object_id=claim.id,
                             outcome=claim.status, receipt_id=receipt.id if receipt else None)
        return claim, receipt

    for _ in range(STORE_ATTEMPTS):
        try:
            stored = await ctx.db.write(store, deferred=True, ahead=ahead)
        except IntegrityError:
            continue  # another request stored the same key or invoice first: replay it
        except Unauthorized:
            ctx.key_cache.forget(principal.key_id)  # revoked since cached: read it again
            raise
        if not isinstance(stored, SubmitResult) and stored[0].status == "queued":
            claim, receipt = stored  # (a claim sent now is logged once, with its answer)
            log.info("claim.stored", claim_id=claim.id, operator=operator.name,
                     status=claim.status, receipt_id=receipt.id if receipt else None)
        return stored
    raise ClaimInFlight("the same claim is being stored by another request")


def _new_claim(
    ctx: AppContext,
    claim_in: ClaimCreate,
    body: dict[str, object],
    request_hash: str,
    idempotency_key: str | None,
    operator: Operator,
    beneficiary_hash: str,
) -> Claim:
    claim_id = new_claim_id()
    person = claim_in.beneficiary
    now = utcnow()
    # Envelope encryption: one data key per pharmacy and month (crypto-shredding unit).
    payload_enc = ctx.cipher.encrypt_json(
        body, context=payload_context(claim_id),
        scope=f"claims:{claim_in.dispenser.finess}:{now:%Y-%m}",
    )
    return new_row(
        Claim,
        id=claim_id,
        finess=claim_in.dispenser.finess,
        invoice_number=claim_in.invoice_number,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        nir_hash=ctx.cipher.index("nir", person.nir),
        beneficiary_hash=beneficiary_hash,
        operator=operator.name,
        insurer_number=claim_in.amc.insurer_number,
        service_date=claim_in.service_date,
        status="new",
        amc_requested_cents=claim_in.amc_requested_cents,
        payload_enc=payload_enc,
        data_key_id=ctx.cipher.data_key_of(payload_enc),
        created_at=now,
        updated_at=now,
        queued_at=now,
    )


def _replay(
    ctx: AppContext, session: UnitOfWork, existing: list[Claim], request_hash: str,
    idempotency_key: str | None,
) -> SubmitResult:
    by_key = [c for c in existing if idempotency_key and c.idempotency_key == idempotency_key]
    claim = by_key[0] if by_key else existing[0]
    if claim.request_hash != request_hash:
        if by_key:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with another body",
                errors=[{"field": "Idempotency-Key", "message": "already used with another body"}],
            )
        raise DuplicateInvoice(
            "this invoice number was already submitted with another body", claim_id=claim.id
        )
    if claim.first_http_status is None:
        return _replay_unanswered(ctx, session, claim)
    if claim.first_http_status == OperatorRefused.status:
        raise OperatorRefused(claim.last_error, claim_id=claim.id,
                              headers={"Idempotent-Replayed": "true"})
    receipt = receipts_repository.of_claim(session, claim.id)
    return SubmitResult(to_public(claim, ctx.cipher, receipt, ctx.receipts),
                        claim.first_http_status, replayed=True)


def _replay_unanswered(ctx: AppContext, session: UnitOfWork, claim: Claim) -> SubmitResult:
    """The first request stored the claim but never answered. Until its deadline plus grace
    it still may: 409. After that it is dead (killed, its database gone meanwhile): a claim
    it left `pending` goes back to the queue, looked up before any resend, with its receipt
    decision; and the claim answers as it stands, 201 once the operator has answered it,
    else 202."""
    operator = ctx.operators.get(claim.operator)
    deadline_s = operator.settings.deadline_s if operator else 0.0
    now = utcnow()
    if now < claim.created_at + timedelta(seconds=deadline_s + LEASE_GRACE_S):
        raise ClaimInFlight("the first request with this claim is still in flight",
                            headers={"Retry-After": str(math.ceil(LEASE_GRACE_S))})
    if operator is not None and abandoned.lease_has_expired(claim, now):
        session.refresh(claim, with_for_update=True)  # a sweeping drain may be at it too
        if abandoned.lease_has_expired(claim, now):
            abandoned.requeue(session, claim, ctx.receipts, operator.settings)
    receipt = receipts_repository.of_claim(session, claim.id)
    status = 201 if claim.status in SETTLED else 202
    return SubmitResult(to_public(claim, ctx.cipher, receipt, ctx.receipts), status,
                        replayed=True)


async def _send(
    ctx: AppContext, operator: Operator, claim: Claim, body: dict[str, object], *, nir: str
) -> SubmitResult:
    wire = wire_claim(claim.id, body)
    try:
        outcome = await operator.guard.call(lambda: operator.adapter.submit_claim(wire))
    except OperatorUnavailable as exc:
        queued, receipt = await _queue_unanswered(ctx, operator, claim.id, exc)
        return SubmitResult(to_public(queued, ctx.cipher, receipt, ctx.receipts, nir=nir), 202,
                            replayed=False)
    except OperatorRejected as exc:
        detail = refusal_detail(exc.code)
        await _record_answer(ctx, lambda session: _first_answer(
            session, claim.id, OperatorRefused.status,
            lambda c: transitions.refuse(session, c, detail)))
        CLAIM_OUTCOMES.labels(operator.name, "failed").inc()
        raise OperatorRefused(detail, claim_id=claim.id) from None
    except asyncio.CancelledError:
        interrupted = OperatorUnavailable("interrupted while sending", ambiguous=True)
        await asyncio.shield(_queue_unanswered(ctx, operator, claim.id, interrupted))
        raise
    settled = await _settle(ctx, claim, outcome)
    CLAIM_OUTCOMES.labels(operator.name, settled.status).inc()
    return SubmitResult(to_public(settled, ctx.cipher, nir=nir), 201, replayed=False)


async def _record_answer(ctx: AppContext, work: Callable[[UnitOfWork], Claim], *,
                         deferred: bool = False, ahead: Aheads | None = None) -> Claim:
    """Record what the operator said (or that it said nothing in time). The operator may
    already hold the claim, so a database blip (a restart, a failover) is waited out, as
    long as the lease lets this request answer; after that the claim is left `pending` for
    the drain's sweep, which looks it up first."""
    try:  # tenacity only once the database has failed: its loop costs ~50 us a claim
        return await ctx.db.write(work, deferred=deferred, ahead=ahead)
    except DatabaseUnavailable:
        pass
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(DatabaseUnavailable), stop=stop_after_delay(LEASE_GRACE_S),
        wait=wait_exponential(multiplier=0.2, max=1.0), reraise=True)
    async for attempt in retrying:
        with attempt:
            return await ctx.db.write(work, deferred=deferred, ahead=ahead)
    raise AssertionError("unreachable: tenacity reraises")


def _first_answer(session: UnitOfWork, claim_id: str, http_status: int,
                  move: Callable[[Claim], object]) -> Claim:
    """The claim moved since this request stored it (its lease ran out: swept back to the
    queue, replayed): record this request's outcome on it as it now stands. Except once it
    is handed over in a batch: then the batch's acknowledgement settles it, and this
    request must not put it back in the live queue while the operator holds its file."""
    claim = repository.load(session, claim_id)
    if claim.status == EXPORTED:
        log.info("claim.answer_after_export", claim_id=claim_id)
        return claim
    claim.first_http_status = http_status
    move(claim)
    return claim


async def _settle(ctx: AppContext, sent: Claim, outcome: ClaimOutcome) -> Claim:
    """Record the operator's answer to `sent`, the claim as this request stored it: in one
    UPDATE while it is still pending under this request's lease (nearly always), else
    loaded and settled like any other."""

    answer = transitions.sent_answer(sent, outcome, 201)

    def settle(session: UnitOfWork) -> Claim:
        if settled := transitions.settle_sent(session, answer):
            return settled
        if session.defers:  # the general path loads and flushes: not in a deferred work
            session.require_flushed()
        return _first_answer(session, sent.id, 201,
                             lambda c: transitions.settle(session, c, outcome))

    claim = await _record_answer(ctx, settle, deferred=True, ahead=answer.ahead)
    log.info("claim.answered", claim_id=claim.id, status=claim.status)
    return claim


async def _queue_unanswered(
    ctx: AppContext, operator: Operator, claim_id: str, error: OperatorUnavailable
) -> tuple[Claim, Receipt | None]:
    """No usable answer in time: the claim waits in the queue, never lost."""
    settings = operator.settings
    issued: list[Receipt] = []

    def move(session: UnitOfWork, claim: Claim) -> None:
        if isinstance(error, BreakerOpen):
            transitions.enqueue(session, claim, f"queued: {error.reason}")
        else:
            transitions.retry_later(
                session, claim, error.reason, ambiguous=error.ambiguous,
                max_attempts=settings.max_attempts,
                max_age=timedelta(seconds=settings.max_queue_age_s),
            )
        if claim.status == "queued" and (receipt := ctx.receipts.cover(session, claim,
                                                                        settings)):
            issued.append(receipt)

    claim = await _record_answer(ctx, lambda session: _first_answer(
        session, claim_id, 202, lambda c: move(session, c)))
    CLAIM_OUTCOMES.labels(operator.name, claim.status).inc()
    log.warning("claim.queued", claim_id=claim_id, operator=operator.name,
                ambiguous=error.ambiguous)
    return claim, (issued[0] if issued else None)
