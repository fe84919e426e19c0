"""Claims whose sender is gone: back in the queue, looked up before anything is resent.

A claim being sent is `pending` under a lease: its request's (deadline + grace) on the
synchronous path, the drain's otherwise. When the process holding it dies (SIGKILL, a
crash, a lost host) the lease outlives it, and nobody knows whether the operator got
the claim. Such a claim is put back in the queue with `maybe_sent`, so the drain asks
the operator first (`lookup_claim`) and sends only what never arrived, and gets its
receipt decision like any claim queued for an outage. Three ways lead here: the drain's
sweep of expired leases (whatever the breaker), a retry of the same claim after its
first request's deadline, and a process stopping, for what it still holds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from gateway.claims import transitions
from gateway.storage.models import Claim

if TYPE_CHECKING:
    from gateway.receipts.issuer import ReceiptIssuer
    from gateway.settings import OperatorSettings

SENDER_GONE = "its sender stopped before an answer was recorded: queued, looked up first"


def requeue(session: Session, claim: Claim, receipts: ReceiptIssuer,
            settings: OperatorSettings, detail: str = SENDER_GONE) -> None:
    transitions.enqueue(session, claim, detail, maybe_sent=True)
    receipts.cover(session, claim, settings)


def expired(session: Session, operator: str, now: datetime, limit: int) -> list[Claim]:
    """This operator's pending claims whose lease has run out, locked (PostgreSQL) so two
    sweeping instances never take the same one."""
    query = select(Claim).where(
        col(Claim.operator) == operator, col(Claim.status) == "pending",
        col(Claim.lease_until) < now,
    ).order_by(col(Claim.lease_until)).limit(limit).with_for_update(skip_locked=True)
    return list(session.exec(query).all())


def owned(session: Session, owner: str) -> list[Claim]:
    """The pending claims this process still holds."""
    query = select(Claim).where(
        col(Claim.status) == "pending", col(Claim.lease_owner) == owner,
    ).with_for_update()
    return list(session.exec(query).all())


def lease_has_expired(claim: Claim, now: datetime) -> bool:
    return claim.status == "pending" and (claim.lease_until is None or claim.lease_until < now)


def requeue_owned(session: Session, owner: str, receipts: ReceiptIssuer,
                  settings_of: Callable[[str], OperatorSettings | None]) -> int:
    """At shutdown: every claim this process still holds `pending` goes back to the queue
    (its send may have begun), so none waits for its lease to expire."""
    claims = owned(session, owner)
    for claim in claims:
        if (settings := settings_of(claim.operator)) is not None:
            requeue(session, claim, receipts, settings, "the gateway stopped while sending: "
                    "queued, looked up first")
    return len(claims)
