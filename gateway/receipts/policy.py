"""When may the patient leave without paying the AMC share? (README: provisional receipts)

A pure function: it gets the claim, the operator's `provisional` setting, what the
rights cache says, and the running totals the caps need, and returns a decision
with its reason, its basis and the figures it used, all of which are stored with
the claim. The pharmacy bears the risk except where an insurer agreed to pay on
the card's evidence (`card`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.claims.schemas import ClaimCreate
from gateway.settings import ProvisionalSettings

Decision = Literal["provisional", "refused"]


@dataclass(frozen=True, slots=True)
class CachedRights:
    """What the rights cache knows of this beneficiary at this insurer (no identity)."""

    covered: bool
    guarantees: dict[str, int] = field(default_factory=dict)  # prestation code -> % of TM


@dataclass(frozen=True, slots=True)
class Exposure:
    """Running totals, in cents, of receipts still open (neither honored, contested nor void)."""

    beneficiary_same_day: int
    pharmacy_outstanding: int


@dataclass(frozen=True, slots=True)
class Coverage:
    decision: Decision
    reason: str | None
    basis: str | None
    amc_cents: int
    patient_due_cents: int
    figures: dict[str, int | str | None]


def total_price(claim: ClaimCreate) -> int:
    return sum(line.unit_price_cents * line.quantity for line in claim.lines)


def amo_total(claim: ClaimCreate) -> int:
    return sum(line.amo_cents for line in claim.lines)


def from_guarantees(claim: ClaimCreate, guarantees: dict[str, int]) -> int:
    """Per line: the guarantee's % of the ticket modérateur, at most the line's amc_cents."""
    granted = 0
    for line in claim.lines:
        percent = max(0, min(100, guarantees.get(line.code, 0)))
        ticket_moderateur = line.base_cents - line.amo_cents
        granted += min(line.amc_cents, ticket_moderateur * percent // 100)
    return granted


def decide(
    claim: ClaimCreate,
    *,
    offer: str,
    caps: ProvisionalSettings,
    rights: CachedRights | None,
    exposure: Exposure,
) -> Coverage:
    requested = claim.amc_requested_cents
    figures: dict[str, int | str | None] = {"offer": offer, "requested_cents": requested}

    def refused(reason: str, basis: str | None = None) -> Coverage:
        return Coverage("refused", reason, basis, 0,
                        max(0, total_price(claim) - amo_total(claim)), figures)

    if claim.service_date < claim.amc.valid_from:
        return refused("card_not_yet_valid")
    if claim.service_date > claim.amc.valid_to:
        return refused("card_expired")
    if offer == "card":
        granted = requested
    elif offer == "cached_rights":
        if rights is None:
            return refused("no_cached_rights", offer)
        if not rights.covered:
            return refused("not_covered", offer)
        granted = from_guarantees(claim, rights.guarantees)
        figures["guarantees"] = ",".join(f"{k}:{v}" for k, v in sorted(rights.guarantees.items()))
        if granted == 0:
            return refused("not_covered", offer)
    else:
        return refused("not_offered")
    figures.update(granted_cents=granted,
                   beneficiary_same_day_cents=exposure.beneficiary_same_day,
                   pharmacy_outstanding_cents=exposure.pharmacy_outstanding)
    if granted > caps.max_amc_cents_per_claim:
        return refused("over_claim_cap", offer)
    if exposure.beneficiary_same_day + granted > caps.max_amc_cents_per_beneficiary_per_day:
        return refused("over_beneficiary_daily_cap", offer)
    if exposure.pharmacy_outstanding + granted > caps.max_outstanding_cents_per_pharmacy:
        return refused("over_pharmacy_outstanding_cap", offer)
    due = max(0, total_price(claim) - amo_total(claim) - granted)
    return Coverage("provisional", None, offer, granted, due, figures)
