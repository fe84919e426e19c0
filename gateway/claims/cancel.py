"""Cancelling a claim: at once when it was never sent, through the operator otherwise.

An accepted claim stays `accepted` with `cancellation_pending` until its operator
confirms; when the operator cannot be reached the drain sends the cancellation later.
"""

from __future__ import annotations

import structlog

from adapters.base import OperatorRejected, OperatorUnavailable
from gateway.claims import repository
from gateway.claims.presenter import to_public
from gateway.claims.queries import own_claim
from gateway.claims.service import SubmitResult
from gateway.context import AppContext
from gateway.errors import ClaimInFlight, NotCancellable
from gateway.observability.metrics import CLAIM_OUTCOMES
from gateway.receipts import lifecycle
from gateway.receipts import repository as receipts_repository
from gateway.security.apikeys import Principal
from gateway.storage.models import Claim
from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)


def confirm_cancelled(session: UnitOfWork, claim_id: str) -> Claim:
    """The operator confirmed the cancellation: `cancelled`, once. The request itself and
    the drains of every process (instances, `serve --workers`) may all have sent it and
    come here; the row is locked, and whoever comes after the first writes nothing."""
    claim = session.get(Claim, claim_id, with_for_update=True)
    if claim is None:
        raise LookupError(f"claim {claim_id} vanished")
    if claim.status == "cancelled":
        return claim
    claim.cancellation_pending = False
    repository.record(session, claim, "cancelled", f"cancelled by {claim.operator}")
    lifecycle.follow(session, claim)
    return claim


async def cancel(*, ctx: AppContext, principal: Principal, claim_id: str) -> SubmitResult:
    """200 when cancelled, 202 while the operator has not confirmed."""

    def request(session: UnitOfWork) -> tuple[Claim, int | None]:
        claim = own_claim(session, principal, claim_id)
        if claim.status in ("queued", "failed"):
            ctx.audit_log.append(session, principal, "claim.cancel", object_id=claim.id,
                                 outcome="cancelled")
            repository.record(session, claim, "cancelled", "cancelled before sending")
            lifecycle.follow(session, claim)
            CLAIM_OUTCOMES.labels(claim.operator, "cancelled").inc()
            return claim, 200
        if claim.status == "cancelled":
            return claim, 200
        if claim.cancellation_pending:
            return claim, 202
        if claim.status == "pending":
            raise ClaimInFlight("the claim is being sent right now; cancel it once answered")
        if claim.status != "accepted":
            raise NotCancellable(f"a {claim.status} claim cannot be cancelled")
        claim.cancellation_pending = True
        ctx.audit_log.append(session, principal, "claim.cancel", object_id=claim.id,
                             outcome="requested")
        repository.record(session, claim, "accepted", "cancellation requested")
        return claim, None

    claim, settled_status = await ctx.db.write(request)
    if settled_status is not None:
        receipt = await ctx.db.read(lambda s: receipts_repository.of_claim(s, claim.id))
        return SubmitResult(to_public(claim, ctx.cipher, receipt, ctx.receipts),
                            settled_status, replayed=False)
    operator = ctx.operators.get(claim.operator)
    try:
        if operator is None:
            raise OperatorUnavailable("operator no longer configured")
        await operator.guard.call(lambda: operator.adapter.cancel_claim(claim.id))
    except (OperatorUnavailable, OperatorRejected) as exc:
        log.warning("claim.cancel_deferred", claim_id=claim.id, error_type=type(exc).__name__)
        return SubmitResult(to_public(claim, ctx.cipher), 202, replayed=False)
    cancelled = await ctx.db.write(lambda session: confirm_cancelled(session, claim.id))
    CLAIM_OUTCOMES.labels(claim.operator, "cancelled").inc()
    return SubmitResult(to_public(cancelled, ctx.cipher), 200, replayed=False)
