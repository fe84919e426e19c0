"""A receipt follows its claim: honored, contested or void, each change an event."""

from __future__ import annotations

from datetime import datetime

import structlog

from gateway.claims import repository as claims_repository
from gateway.receipts import repository
from gateway.storage.models import Claim, utcnow
from gateway.storage.unit import Ahead, UnitOfWork

log = structlog.get_logger(__name__)
EVENT_OF = {"honored": "receipt.honored", "contested": "receipt.contested"}


NEW_STATUS = {"accepted": "honored", "rejected": "contested", "cancelled": "void"}
DETAIL = {
    "honored": "receipt honored: the operator accepted the claim",
    "contested": "receipt contested: the operator rejected the claim; the pharmacy must "
                 "recover the AMC part from the patient",
    "void": "receipt void: the claim was cancelled",
}


def follow(session: UnitOfWork, claim: Claim) -> None:
    """After the claim's status changed: move its open receipt, if it has one."""
    new_status = NEW_STATUS.get(claim.status)
    if new_status is None:
        return
    receipt = repository.of_claim(session, claim.id)
    if receipt is None or receipt.status != repository.OPEN:
        return
    now = utcnow()
    receipt.status, receipt.updated_at = new_status, now
    session.add(receipt)
    _moved(session, claim, receipt.id, new_status, now)


def follow_settled(session: UnitOfWork, claim: Claim) -> None:
    """`follow`, for a claim settled by a guarded UPDATE (`transitions.settle_sent`): its
    receipt, if the claim was given one, moves in one UPDATE and is never loaded, at the
    instant the claim was answered (so its write group may have run it ahead:
    `follow_settled_ahead`)."""
    new_status = _settled_receipt_status(claim.status, claim.coverage_decision)
    if new_status is None:
        return
    receipt_id = repository.move_open(session, claim.id, new_status, claim.updated_at)
    if receipt_id is not None:
        _moved(session, claim, receipt_id, new_status, claim.updated_at)


def follow_settled_ahead(claim_id: str, status: str, coverage_decision: str | None,
                         answered_at: datetime) -> tuple[Ahead, ...]:
    """What `follow_settled` will write for a claim its sender answers `status` at
    `answered_at`, to run ahead just after the claim's own guarded UPDATE (PostgreSQL)."""
    new_status = _settled_receipt_status(status, coverage_decision)
    if new_status is None:
        return ()
    return (repository.move_open_ahead(claim_id, new_status, answered_at,
                                       claim_status=status),)


def _settled_receipt_status(status: str, coverage_decision: str | None) -> str | None:
    """Where a claim settled `status` moves its receipt; None when it was given none (the
    decision is made, once, before a receipt would be issued)."""
    if coverage_decision != "provisional":
        return None
    return NEW_STATUS.get(status)


def _moved(session: UnitOfWork, claim: Claim, receipt_id: str, new_status: str,
           now: datetime) -> None:
    claims_repository.add_history(session, claim, DETAIL[new_status])
    if new_status in EVENT_OF:
        claims_repository.add_event(session, finess=claim.finess, type_=EVENT_OF[new_status],
                                    claim_id=claim.id, at=now)
    log.info("receipt.changed", receipt_id=receipt_id, status=new_status)
