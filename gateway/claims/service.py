"""Submitting, reading and cancelling claims: the rules, away from HTTP.

A claim is committed (status `pending`) before anything is sent to its operator,
so a 201 is a promise that the claim exists; the operator's idempotency key is
the claim id, minted then and never changed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime

import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from ulid import ULID

from adapters.base import ClaimOutcome, OperatorClaim, OperatorRejected, OperatorUnavailable
from gateway.claims import repository
from gateway.claims.presenter import payload_context, to_detail, to_public
from gateway.claims.rules import check_claim_rules
from gateway.claims.schemas import ClaimCreate, ClaimDetail, ClaimPage, ClaimPublic
from gateway.context import AppContext
from gateway.errors import (
    ClaimInFlight,
    DuplicateInvoice,
    Forbidden,
    GatewayError,
    IdempotencyKeyReused,
    NotCancellable,
    NotFound,
    OperatorRefused,
    OperatorUnavailableError,
    UnknownInsurer,
    ValidationFailed,
)
from gateway.models import Claim, ClaimHistory, utcnow
from gateway.operators import Operator
from gateway.resilience import call_operator
from gateway.security.apikeys import Principal

log = structlog.get_logger(__name__)
STORE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class SubmitResult:
    claim: ClaimPublic
    http_status: int
    replayed: bool


def new_claim_id() -> str:
    return f"clm_{ULID()}"


def canonical_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


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
    stored = await _store_or_replay(ctx, claim_in, body, request_hash, idempotency_key, operator)
    if isinstance(stored, SubmitResult):
        return stored
    return await _send(ctx, operator, stored, body)


async def _store_or_replay(
    ctx: AppContext,
    claim_in: ClaimCreate,
    body: dict[str, object],
    request_hash: str,
    idempotency_key: str | None,
    operator: Operator,
) -> Claim | SubmitResult:
    """Insert the claim, or answer for the one already holding this key or invoice."""

    def store(session: Session) -> Claim | SubmitResult:
        existing = repository.find_duplicate(
            session, finess=claim_in.dispenser.finess,
            invoice_number=claim_in.invoice_number, idempotency_key=idempotency_key,
        )
        if existing:
            return _replay(ctx, existing, request_hash, idempotency_key)
        claim = _new_claim(ctx, claim_in, body, request_hash, idempotency_key, operator)
        repository.record(session, claim, "pending", "received")
        return claim

    for _ in range(STORE_ATTEMPTS):
        try:
            stored = await ctx.db.write(store)
        except IntegrityError:
            continue  # another request stored the same key or invoice first: replay it
        if isinstance(stored, Claim):
            log.info("claim.stored", claim_id=stored.id, operator=operator.name)
        return stored
    raise ClaimInFlight("the same claim is being stored by another request")


def _new_claim(
    ctx: AppContext,
    claim_in: ClaimCreate,
    body: dict[str, object],
    request_hash: str,
    idempotency_key: str | None,
    operator: Operator,
) -> Claim:
    claim_id = new_claim_id()
    person = claim_in.beneficiary
    now = utcnow()
    return Claim(
        id=claim_id,
        finess=claim_in.dispenser.finess,
        invoice_number=claim_in.invoice_number,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        nir_hash=ctx.cipher.index("nir", person.nir),
        beneficiary_hash=ctx.cipher.index(
            "beneficiary", person.nir, person.birth_date.isoformat(), str(person.birth_rank)
        ),
        operator=operator.name,
        insurer_number=claim_in.amc.insurer_number,
        service_date=claim_in.service_date,
        status="pending",
        amc_requested_cents=claim_in.amc_requested_cents,
        payload_enc=ctx.cipher.encrypt_json(body, context=payload_context(claim_id)),
        created_at=now,
        updated_at=now,
    )


def _replay(
    ctx: AppContext, existing: list[Claim], request_hash: str, idempotency_key: str | None
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
            "this invoice number was already submitted with another body",
            claim_id=claim.id,
        )
    if claim.status == "pending" or claim.first_http_status is None:
        raise ClaimInFlight("the first request with this claim is still in flight")
    replay_headers = {"Idempotent-Replayed": "true"}
    if claim.first_http_status >= 500:
        error = _failure_for(claim)
        error.headers.update(replay_headers)
        raise error
    return SubmitResult(to_public(claim, ctx.cipher), claim.first_http_status, replayed=True)


def _failure_for(claim: Claim) -> GatewayError:
    if claim.first_http_status == OperatorRefused.status:
        return OperatorRefused(claim.last_error, claim_id=claim.id)
    return OperatorUnavailableError(
        "the operator is unavailable; the claim is stored and will be sent once it is back",
        claim_id=claim.id,
    )


async def _send(
    ctx: AppContext, operator: Operator, claim: Claim, body: dict[str, object]
) -> SubmitResult:
    wire = OperatorClaim(idempotency_key=claim.id, body={**body, "claim_id": claim.id})
    try:
        outcome = await call_operator(operator, lambda: operator.adapter.submit_claim(wire))
    except OperatorUnavailable as exc:
        detail = f"operator unavailable: {exc.reason}"
        await _settle_unanswered(ctx, claim.id, "queued", 503, detail)
        raise _failure_for(claim.model_copy(update={"first_http_status": 503})) from None
    except OperatorRejected as exc:
        detail = f"operator refused the request: {exc.code} {exc.label}"[:500]
        await _settle_unanswered(ctx, claim.id, "failed", OperatorRefused.status, detail)
        raise OperatorRefused(detail, claim_id=claim.id) from None
    except asyncio.CancelledError:
        await asyncio.shield(
            _settle_unanswered(ctx, claim.id, "queued", 503, "interrupted while sending")
        )
        raise
    settled = await _settle_answered(ctx, claim.id, outcome)
    return SubmitResult(to_public(settled, ctx.cipher), 201, replayed=False)


async def _settle_answered(ctx: AppContext, claim_id: str, outcome: ClaimOutcome) -> Claim:
    def settle(session: Session) -> Claim:
        claim = repository.load(session, claim_id)
        claim.first_http_status = 201
        claim.attempts += 1
        if outcome.status == "accepted":
            claim.amc_covered_cents = outcome.amc_cents
            claim.operator_reference = outcome.reference
            repository.record(session, claim, "accepted", f"accepted by {claim.operator}")
        else:
            claim.rejection_code = outcome.code or "unknown"
            claim.rejection_label = (outcome.label or "")[:500]
            repository.record(session, claim, "rejected", f"rejected: {claim.rejection_code}")
        return claim

    claim = await ctx.db.write(settle)
    log.info("claim.answered", claim_id=claim_id, status=claim.status)
    return claim


async def _settle_unanswered(
    ctx: AppContext, claim_id: str, status: str, http_status: int, detail: str
) -> None:
    """Keep the claim when the operator gave no usable answer: it is never lost."""

    def settle(session: Session) -> None:
        claim = repository.load(session, claim_id)
        claim.first_http_status = http_status
        claim.attempts += 1
        claim.last_error = detail[:500]
        if status == "queued":
            # Provisional receipts arrive with the queue's policy; until then none is offered.
            claim.coverage_decision, claim.coverage_reason = "refused", "not_offered"
        repository.record(session, claim, status, detail[:500])

    await ctx.db.write(settle)
    log.warning("claim.unanswered", claim_id=claim_id, status=status)


async def get(*, ctx: AppContext, principal: Principal, claim_id: str) -> ClaimDetail:
    def load(session: Session) -> tuple[Claim, list[ClaimHistory]]:
        claim = _own_claim(session, principal, claim_id)
        return claim, repository.history(session, claim.id)

    claim, steps = await ctx.db.read(load)
    return to_detail(claim, steps, ctx.cipher)


def _own_claim(session: Session, principal: Principal, claim_id: str) -> Claim:
    claim = repository.get_own(session, claim_id=claim_id, finess=principal.finess or "")
    if claim is None:
        raise NotFound("no such claim")
    return claim


def encode_cursor(claim_id: str) -> str:
    return base64.urlsafe_b64encode(claim_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if not decoded.startswith("clm_"):
        raise ValidationFailed(
            "invalid cursor", errors=[{"field": "cursor", "message": "not a cursor from `next`"}]
        )
    return decoded


async def list_claims(
    *,
    ctx: AppContext,
    principal: Principal,
    status: str | None,
    operator: str | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
) -> ClaimPage:
    before_id = decode_cursor(cursor) if cursor else None
    claims = await ctx.db.read(lambda session: repository.list_own(
        session, finess=principal.finess or "", status=status, operator=operator,
        since=since, before_id=before_id, limit=limit + 1,
    ))
    page = claims[:limit]
    more = len(claims) > limit
    return ClaimPage(
        claims=[to_public(claim, ctx.cipher) for claim in page],
        next=encode_cursor(page[-1].id) if more and page else None,
    )


async def cancel(*, ctx: AppContext, principal: Principal, claim_id: str) -> SubmitResult:
    """Queued or failed: cancelled at once. Accepted: the operator must confirm."""

    def request(session: Session) -> tuple[Claim, int | None]:
        claim = _own_claim(session, principal, claim_id)
        if claim.status in ("queued", "failed"):
            repository.record(session, claim, "cancelled", "cancelled before sending")
            return claim, 200
        if claim.status == "cancelled":
            return claim, 200
        if claim.cancellation_pending:
            return claim, 202
        if claim.status != "accepted":
            raise NotCancellable(f"a {claim.status} claim cannot be cancelled")
        claim.cancellation_pending = True
        repository.record(session, claim, "accepted", "cancellation requested")
        return claim, None

    claim, settled_status = await ctx.db.write(request)
    if settled_status is not None:
        return SubmitResult(to_public(claim, ctx.cipher), settled_status, replayed=False)
    operator = ctx.operators.get(claim.operator)
    try:
        if operator is None:
            raise OperatorUnavailable("operator no longer configured")
        await call_operator(operator, lambda: operator.adapter.cancel_claim(claim.id))
    except (OperatorUnavailable, OperatorRejected) as exc:
        log.warning("claim.cancel_deferred", claim_id=claim.id, error_type=type(exc).__name__)
        return SubmitResult(to_public(claim, ctx.cipher), 202, replayed=False)

    def confirm(session: Session) -> Claim:
        fresh = repository.load(session, claim.id)
        fresh.cancellation_pending = False
        repository.record(session, fresh, "cancelled", f"cancelled by {fresh.operator}")
        return fresh

    return SubmitResult(to_public(await ctx.db.write(confirm), ctx.cipher), 200, replayed=False)
