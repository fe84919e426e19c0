"""The one protocol every tiers-payant operator adapter speaks, and its DTOs.

No httpx (or any transport) type crosses this module: an adapter turns its
transport's failures into `OperatorUnavailable` (may retry, may queue) or
`OperatorRejected` (the operator refused the request itself: do not retry).
A claim *rejection* is not an error: it is a normal `ClaimOutcome`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal, Protocol, runtime_checkable


class OperatorError(Exception):
    """Base of what an adapter may raise."""


class OperatorUnavailable(OperatorError):
    """The operator could not give an answer: retry later or queue.

    `ambiguous` is true when the request may have reached the operator (read
    timeout, reset after sending, 502, 504): look the claim up before resending.
    """

    def __init__(
        self, reason: str, *, ambiguous: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.ambiguous = ambiguous
        self.retry_after_s = retry_after_s


class OperatorRejected(OperatorError):
    """The operator refused the request as such (4xx): resending it will not help."""

    def __init__(self, code: str, label: str) -> None:
        super().__init__(f"{code}: {label}")
        self.code = code
        self.label = label


@dataclass(frozen=True, slots=True)
class OperatorClaim:
    """A claim as sent on the wire: the 3.1 body plus `claim_id`, and its idempotency key."""

    idempotency_key: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ClaimOutcome:
    """The operator's answer to a claim: accepted (with its AMC part) or rejected."""

    status: Literal["accepted", "rejected"]
    reference: str | None = None
    amc_cents: int | None = None
    code: str | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class RightsRequest:
    """A rights check: `beneficiary`, `amc` and `date` as JSON-ready dicts."""

    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RightsAnswer:
    covered: bool
    valid_to: date | None = None
    guarantees: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class OperatorAdapter(Protocol):
    """What the gateway needs from an operator; retries and breakers wrap it elsewhere."""

    name: str

    async def health(self) -> None:
        """Return when the operator answers its health check; raise `OperatorUnavailable`."""

    async def check_rights(self, request: RightsRequest) -> RightsAnswer: ...

    async def submit_claim(self, claim: OperatorClaim) -> ClaimOutcome: ...

    async def lookup_claim(self, idempotency_key: str) -> ClaimOutcome | None:
        """The answer first given for that key, or None if the operator never received it."""

    async def cancel_claim(self, idempotency_key: str) -> None: ...
