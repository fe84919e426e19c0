"""What the pharmacist sees at a glance: each operator in words, and the pharmacy's claims.

Claims go through the API's presenter, so only the masked NIR ever reaches a page.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.claims.presenter import to_public
from gateway.claims.schemas import ClaimPublic
from gateway.console import repository
from gateway.console.views import hhmm
from gateway.context import AppContext
from gateway.ops import repository as ops_repository
from gateway.receipts import repository as receipts_repository
from gateway.resilience.operators import Operator
from gateway.storage.models import Claim, Receipt
from gateway.storage.unit import UnitOfWork

SHOWN = 100  # queued or failed claims listed; the count says how many more there are
RECENT = 20
COUNTER = {
    "available": "tiers payant normal",
    "provisional": "tiers payant assuré sous reçu provisoire",
    "none": "avance des frais nécessaire",
}


@dataclass(frozen=True, slots=True)
class OperatorStatus:
    name: str
    state: str  # closed | open | half_open, as the breaker says
    words: str
    paused: bool
    counter: str
    tone: str  # ok | pending | alert
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimList:
    claims: list[ClaimPublic]
    total: int


@dataclass(frozen=True, slots=True)
class Dashboard:
    operators: list[OperatorStatus]
    queued: ClaimList
    failed: ClaimList
    recent: ClaimList
    outstanding_cents: int
    outstanding_by_operator: dict[str, int]


def operator_status(operator: Operator, paused: bool) -> OperatorStatus:
    """The breaker's state in the pharmacist's words, and what it means at the counter."""
    breaker = operator.breaker
    state = breaker.state
    words = {"closed": "disponible", "half_open": "rétablissement en cours"}.get(
        state, f"indisponible depuis {hhmm(breaker.since)}")
    if state == "closed" and not paused:
        return OperatorStatus(operator.name, state, words, paused, COUNTER["available"], "ok")
    provisional = operator.settings.provisional
    if provisional == "none":
        return OperatorStatus(operator.name, state, words, paused, COUNTER["none"], "alert",
                              "les demandes sont gardées et envoyées plus tard")
    detail = ("si les droits du patient ont été vérifiés récemment"
              if provisional == "cached_rights" else None)
    return OperatorStatus(operator.name, state, words, paused, COUNTER["provisional"],
                          "pending", detail)


async def operator_statuses(ctx: AppContext) -> list[OperatorStatus]:
    paused = await ctx.db.read(ops_repository.paused_operators)
    return [operator_status(op, op.name in paused) for op in ctx.operators]


async def load_dashboard(ctx: AppContext, finess: str) -> Dashboard:
    def load(session: UnitOfWork) -> tuple[dict[str, tuple[list[Claim], int]], dict[str, Receipt],
                                          dict[str, int], set[str]]:
        lists = {
            "queued": (repository.claims_of_pharmacy(session, finess, repository.QUEUED,
                                                     limit=SHOWN, oldest_first=True),
                       repository.count_of_pharmacy(session, finess, repository.QUEUED)),
            "failed": (repository.claims_of_pharmacy(session, finess, ("failed",),
                                                     limit=SHOWN, oldest_first=False),
                       repository.count_of_pharmacy(session, finess, ("failed",))),
            "recent": (repository.claims_of_pharmacy(session, finess, repository.SETTLED,
                                                     limit=RECENT, oldest_first=False), 0),
        }
        ids = [claim.id for claims, _ in lists.values() for claim in claims]
        return (lists, receipts_repository.of_claims(session, ids),
                receipts_repository.outstanding_by_operator(session, finess),
                ops_repository.paused_operators(session))

    lists, receipts, outstanding, paused = await ctx.db.read(load)

    def shown(claims: list[Claim], total: int) -> ClaimList:
        return ClaimList([to_public(c, ctx.cipher, receipts.get(c.id), ctx.receipts)
                          for c in claims], max(total, len(claims)))

    return Dashboard(
        operators=[operator_status(op, op.name in paused) for op in ctx.operators],
        queued=shown(*lists["queued"]), failed=shown(*lists["failed"]),
        recent=shown(*lists["recent"]),
        outstanding_cents=sum(outstanding.values()), outstanding_by_operator=outstanding,
    )

