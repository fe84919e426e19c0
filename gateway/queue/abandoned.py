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

from gateway.claims import transitions
from gateway.queue import repository
from gateway.storage.models import Claim
from gateway.storage.unit import UnitOfWork

if TYPE_CHECKING:
    from gateway.receipts.issuer import ReceiptIssuer
    from gateway.settings import OperatorSettings

SENDER_GONE = "its sender stopped before an answer was recorded: queued, looked up first"


def requeue(session: UnitOfWork, claim: Claim, receipts: ReceiptIssuer,
            settings: OperatorSettings, detail: str = SENDER_GONE) -> None:
    transitions.enqueue(session, claim, detail, maybe_sent=True)
    receipts.cover(session, claim, settings)


def lease_has_expired(claim: Claim, now: datetime) -> bool:
    return claim.status == "pending" and (claim.lease_until is None or claim.lease_until < now)


def requeue_owned(session: UnitOfWork, owner: str, receipts: ReceiptIssuer,
                  settings_of: Callable[[str], OperatorSettings | None]) -> int:
    """At shutdown: every claim this process still holds `pending` goes back to the queue
    (its send may have begun), so none waits for its lease to expire."""
    claims = repository.held_by(session, owner)
    for claim in claims:
        if (settings := settings_of(claim.operator)) is not None:
            requeue(session, claim, receipts, settings, "the gateway stopped while sending: "
                    "queued, looked up first")
    return len(claims)
