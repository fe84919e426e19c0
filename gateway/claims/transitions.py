"""How a claim moves after each answer (or silence) of its operator.

Shared by the synchronous path and the drain, so that both settle, queue, retry
and give up in exactly the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from adapters.base import ClaimOutcome
from gateway.claims import repository
from gateway.claims.operator_texts import message_for, safe_code, safe_reference
from gateway.receipts import lifecycle
from gateway.storage.models import Claim, ClaimHistory, fields_of, new_row, utcnow
from gateway.storage.unit import Ahead, UnitOfWork

RETRY_BASE_S = 2.0
RETRY_CAP_S = 300.0
_rng = random.Random()  # noqa: S311 - jitter, not secrecy


def answer_of(operator: str, outcome: ClaimOutcome) -> tuple[str, dict[str, Any], str]:
    """(status, fields, history detail) that an operator's final answer gives its claim."""
    done = {"lease_owner": None, "lease_until": None, "maybe_sent": False, "last_error": None}
    if outcome.status == "accepted":
        return "accepted", {**done, "amc_covered_cents": outcome.amc_cents,
                            "operator_reference": safe_reference(outcome.reference)}, \
            f"accepted by {operator}"
    # the operator's code, checked; never its label: see operator_texts
    code = safe_code(outcome.code)
    return "rejected", {**done, "rejection_code": code, "rejection_label": message_for(code)}, \
        f"rejected: {code}"


def settle(session: UnitOfWork, claim: Claim, outcome: ClaimOutcome) -> None:
    """The operator answered: accepted or rejected, for good."""
    status, fields, detail = answer_of(claim.operator, outcome)
    claim.attempts += 1
    for name, value in fields.items():
        setattr(claim, name, value)
    repository.record(session, claim, status, detail)
    lifecycle.follow(session, claim)


@dataclass(frozen=True, slots=True)
class SentAnswer:
    """An operator's answer to a claim its sender holds pending under its own lease (the
    synchronous path, or the drain), as `settle_sent` writes it: known before the write
    group runs, so that the group may run its guarded UPDATE ahead (`ahead`)."""

    claim: Claim  # the sender's detached copy, its lease as the sender holds it
    status: str
    values: dict[str, Any]  # every column the guarded UPDATE writes
    detail: str

    def ahead(self) -> tuple[Ahead, ...]:
        """The guarded UPDATE, then its receipt's move (which happens only if it wrote)."""
        claim = self.claim
        if claim.lease_owner is None or claim.lease_until is None:
            return ()
        return (repository.update_leased_ahead(
            claim.id, owner=claim.lease_owner, lease_until=claim.lease_until,
            values=self.values),
            *lifecycle.follow_settled_ahead(claim.id, self.status, claim.coverage_decision,
                                            self.values["updated_at"]))


def sent_answer(claim: Claim, outcome: ClaimOutcome,
                first_http_status: int | None) -> SentAnswer:
    status, fields, detail = answer_of(claim.operator, outcome)
    values = {"amc_covered_cents": None, "operator_reference": None, "rejection_code": None,
              "rejection_label": None, **fields, "status": status,
              "attempts": claim.attempts + 1, "first_http_status": first_http_status,
              "updated_at": utcnow()}
    return SentAnswer(claim, status, values, detail)


def settle_sent(session: UnitOfWork, answer: SentAnswer) -> Claim | None:
    """`settle`, for the sender that holds the claim pending under its own lease: one
    UPDATE guarded by that exact lease, no load, no flush of the claim, its receipt (if
    it was given one) moved by one UPDATE. The claim as now stored, or None when it
    moved meanwhile (swept back to the queue, replayed, leased again): then settle it
    the general way."""
    claim = answer.claim
    if claim.lease_owner is None or claim.lease_until is None or not repository.update_leased(
            session, claim.id, owner=claim.lease_owner, lease_until=claim.lease_until,
            values=answer.values):
        return None
    settled = new_row(Claim, **{**fields_of(claim), **answer.values})
    repository.add_step(session, settled, answer.status, answer.detail, changed=True)
    lifecycle.follow_settled(session, settled)
    return settled


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
