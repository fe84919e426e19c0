"""A receipt follows its claim: honored, contested or void, each change an event."""

from __future__ import annotations

import structlog

from gateway.claims import repository as claims_repository
from gateway.receipts import repository
from gateway.storage.models import Claim, utcnow
from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)
EVENT_OF = {"honored": "receipt.honored", "contested": "receipt.contested"}


def follow(session: UnitOfWork, claim: Claim) -> None:
    """After the claim's status changed: move its open receipt, if it has one."""
    new_status = {"accepted": "honored", "rejected": "contested",
                  "cancelled": "void"}.get(claim.status)
    if new_status is None:
        return
    receipt = repository.of_claim(session, claim.id)
    if receipt is None or receipt.status != repository.OPEN:
        return
    now = utcnow()
    receipt.status, receipt.updated_at = new_status, now
    session.add(receipt)
    detail = {
        "honored": "receipt honored: the operator accepted the claim",
        "contested": "receipt contested: the operator rejected the claim; the pharmacy must "
                     "recover the AMC part from the patient",
        "void": "receipt void: the claim was cancelled",
    }[new_status]
    claims_repository.add_history(session, claim, detail)
    if new_status in EVENT_OF:
        claims_repository.add_event(session, finess=claim.finess, type_=EVENT_OF[new_status],
                                    claim_id=claim.id, at=now)
    log.info("receipt.changed", receipt_id=receipt.id, status=new_status)
