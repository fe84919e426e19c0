"""How a claim moves after each answer (or silence) of its operator.

Shared by the synchronous path and the drain, so that both settle, queue, retry
and give up in exactly the same way.
"""

from __future__ import annotations

import random
from datetime import timedelta

from adapters.base import ClaimOutcome
from gateway.claims import repository
from gateway.claims.operator_texts import message_for, safe_code, safe_reference
from gateway.receipts import lifecycle
from gateway.storage.models import Claim, ClaimHistory, utcnow
from gateway.storage.unit import UnitOfWork

RETRY_BASE_S = 2.0
RETRY_CAP_S = 300.0
_rng = random.Random()  # noqa: S311 - jitter, not secrecy


def settle(session: UnitOfWork, claim: Claim, outcome: ClaimOutcome) -> None:
    """The operator answered: accepted or rejected, for good."""
    claim.attempts += 1
    claim.lease_owner = claim.lease_until = None
    claim.maybe_sent = False
    claim.last_error = None
    if outcome.status == "accepted":
        claim.amc_covered_cents = outcome.amc_cents
        claim.operator_reference = safe_reference(outcome.reference)
        repository.record(session, claim, "accepted", f"accepted by {claim.operator}")
    else:
        # the operator's code, checked; never its label: see operator_texts
        claim.rejection_code = safe_code(outcome.code)
        claim.rejection_label = message_for(claim.rejection_code)
        repository.record(session, claim, "rejected", f"rejected: {claim.rejection_code}")
    lifecycle.follow(session, claim)


def enqueue(
    session: UnitOfWork, claim: Claim, detail: str, *, maybe_sent: bool = False
) -> ClaimHistory:
    """Into the queue, due now: nothing was tried yet, or the breaker stopped it."""
    now = utcnow()
    claim.queued_at = claim.queued_at or now
    claim.next_attempt_at = now
    claim.lease_owner = claim.lease_until = None
    claim.maybe_sent = claim.maybe_sent or maybe_sent
    return repository.record(session, claim, "queued", detail[:500])


def retry_later(
    session: UnitOfWork, claim: Claim, error: str, *, ambiguous: bool, max_attempts: int,
    max_age: timedelta,
) -> str:
    """A failed attempt: back off with full jitter, or give up after too many or too long."""
    now = utcnow()
    claim.attempts += 1
    claim.last_error = error[:500]
    claim.maybe_sent = claim.maybe_sent or ambiguous
    claim.lease_owner = claim.lease_until = None
    claim.queued_at = claim.queued_at or now
    if claim.attempts >= max_attempts or now - claim.created_at >= max_age:
        repository.record(session, claim, "failed",
                          f"gave up after {claim.attempts} attempts: {error}"[:500])
        return "failed"
    backoff = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (claim.attempts - 1))
    claim.next_attempt_at = now + timedelta(seconds=_rng.uniform(0, backoff))
    repository.record(session, claim, "queued", f"attempt {claim.attempts} failed: {error}"[:500])
    return "queued"


def refuse(session: UnitOfWork, claim: Claim, error: str) -> None:
    """The operator refused the request itself (4xx): only operations staff can help."""
    claim.attempts += 1
    claim.last_error = error[:500]
    claim.lease_owner = claim.lease_until = None
    repository.record(session, claim, "failed", error[:500])
