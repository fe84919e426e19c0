"""Provisional coverage policy (CONTRACT.md section 5), table-driven over every branch of
`decide` and every cap boundary. Caps are the contract's defaults (section 2) unless a
case says otherwise."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from gateway.claims.schemas import ClaimCreate
from gateway.receipts.policy import CachedRights, Coverage, Exposure, decide, from_guarantees
from gateway.settings import ProvisionalSettings
from tests.synthetic import PEOPLE, claim_body

CAPS = ProvisionalSettings()  # 30000 / 60000 / 500000
CLAIM_CAP = CAPS.max_amc_cents_per_claim
DAILY_CAP = CAPS.max_amc_cents_per_beneficiary_per_day
OUTSTANDING_CAP = CAPS.max_outstanding_cents_per_pharmacy

SERVICE = date(2026, 3, 15)
NONE = Exposure(beneficiary_same_day=0, pharmacy_outstanding=0)


def line(code: str = "PH7", *, qty: int = 1, unit: int = 800, base: int = 800,
         amo: int = 520, amc: int = 280) -> dict[str, Any]:
    return {"code": code, "product": "3400935955838", "quantity": qty,
            "unit_price_cents": unit, "base_cents": base, "amo_cents": amo, "amc_cents": amc}


def claim(lines: list[dict[str, Any]] | None = None, *, service: date = SERVICE,
          valid_from: date = date(2026, 1, 1), valid_to: date = date(2026, 12, 31),
          person: int = 0) -> ClaimCreate:
    body = claim_body(person=person, service_date=service.isoformat(),
                      lines=lines if lines is not None else [line()])
    body["amc"]["valid_from"] = valid_from.isoformat()
    body["amc"]["valid_to"] = valid_to.isoformat()
    return ClaimCreate.model_validate(body)


def rights(guarantees: dict[str, int] | None = None, covered: bool = True) -> CachedRights:
    return CachedRights(covered=covered, guarantees=dict(guarantees or {}))


# A multi-line claim: quantities > 1, a line whose unit_price*quantity (750) differs from
# base_cents (700), a line fully paid by AMO.
MULTI = [
    line("PH7", qty=3, unit=250, base=700, amo=455, amc=245),
    line("PH4", qty=2, unit=400, base=800, amo=240, amc=400),
    line("PH1", qty=1, unit=1000, base=1000, amo=1000, amc=0),
]
MULTI_PRICE = 750 + 800 + 1000
MULTI_AMO = 455 + 240 + 1000
MULTI_AMC = 245 + 400 + 0

# Odd ticket modérateur: 801 - 520 = 281; 50 % = 140.5 -> 140.
ODD = line("PH7", unit=801, base=801, amo=520, amc=281)
# A line at the per-claim cap, and one cent above (TM = 40000).
AT_CAP = line("PH7", unit=100_000, base=100_000, amo=60_000, amc=CLAIM_CAP)
ABOVE_CAP = line("PH7", unit=100_000, base=100_000, amo=60_000, amc=CLAIM_CAP + 1)


def case(id_: str, *, lines: list[dict[str, Any]] | None = None, offer: str = "card",
         rights_: CachedRights | None = None, exposure: Exposure = NONE,
         caps: ProvisionalSettings = CAPS, service: date = SERVICE,
         valid_from: date = date(2026, 1, 1), valid_to: date = date(2026, 12, 31),
         decision: str, reason: str | None, basis: str | None, amc: int, due: int,
         marks: Any = ()) -> Any:
    return pytest.param(
        dict(lines=lines, offer=offer, rights=rights_, exposure=exposure, caps=caps,
             service=service, valid_from=valid_from, valid_to=valid_to),
        dict(decision=decision, reason=reason, basis=basis, amc=amc, due=due),
        id=id_, marks=marks)


def provisional(id_: str, *, amc: int, due: int, basis: str = "card", **kw: Any) -> Any:
    return case(id_, decision="provisional", reason=None, basis=basis, amc=amc, due=due, **kw)


def refused(id_: str, reason: str, *, basis: str | None = None, due: int = 280,
            **kw: Any) -> Any:
    return case(id_, decision="refused", reason=reason, basis=basis, amc=0, due=due, **kw)


CASES = [
    # --- 1. card validity (checked before the offer) ---
    refused("card-not-yet-valid-day-before", "card_not_yet_valid",
            service=date(2026, 3, 14), valid_from=date(2026, 3, 15)),
    provisional("card-valid-on-valid_from", amc=280, due=0,
                service=date(2026, 3, 15), valid_from=date(2026, 3, 15)),
    refused("card-expired-day-after", "card_expired",
            service=date(2026, 3, 16), valid_to=date(2026, 3, 15)),
    provisional("card-valid-on-valid_to", amc=280, due=0,
                service=date(2026, 3, 15), valid_to=date(2026, 3, 15)),
    provisional("card-valid-single-day", amc=280, due=0,
                valid_from=date(2026, 3, 15), valid_to=date(2026, 3, 15)),
    refused("order-expired-before-offer-none", "card_expired", offer="none",
            service=date(2026, 3, 16), valid_to=date(2026, 3, 15)),
    refused("order-not-yet-valid-before-no-cached-rights", "card_not_yet_valid",
            offer="cached_rights", service=date(2026, 3, 14), valid_from=date(2026, 3, 15)),
    refused("order-expired-before-caps", "card_expired", lines=[ABOVE_CAP],
            exposure=Exposure(DAILY_CAP, OUTSTANDING_CAP),
            service=date(2026, 3, 16), valid_to=date(2026, 3, 15), due=40_000),
    refused("refused-due-multi-line", "card_expired", lines=MULTI,
            service=date(2026, 3, 16), valid_to=date(2026, 3, 15),
            due=MULTI_PRICE - MULTI_AMO),
    # --- 5. offer none ---
    refused("offer-none", "not_offered", offer="none"),
    refused("offer-none-ignores-rights", "not_offered", offer="none",
            rights_=rights({"PH7": 100})),
    refused("offer-none-multi-line-due", "not_offered", offer="none", lines=MULTI,
            due=MULTI_PRICE - MULTI_AMO),
    refused("offer-unknown-is-not-offered", "not_offered", offer="bogus"),
    # --- 3. offer card ---
    provisional("card-single-line", amc=280, due=0),
    provisional("card-ignores-rights", amc=280, due=0, rights_=rights(covered=False)),
    provisional("card-multi-line-qty-price-ne-base", lines=MULTI, amc=MULTI_AMC,
                due=MULTI_PRICE - MULTI_AMO - MULTI_AMC),
    provisional("card-qty3-unit-price", lines=[line(qty=3, unit=300, base=800)],
                amc=280, due=900 - 520 - 280),
    # --- 2. offer cached_rights ---
    refused("cached-no-rights", "no_cached_rights", offer="cached_rights",
            basis="cached_rights"),
    refused("cached-not-covered", "not_covered", offer="cached_rights",
            basis="cached_rights", rights_=rights({"PH7": 100}, covered=False)),
    refused("cached-covered-empty-guarantees", "not_covered", offer="cached_rights",
            basis="cached_rights", rights_=rights({})),
    refused("cached-covered-zero-percent", "not_covered", offer="cached_rights",
            basis="cached_rights", rights_=rights({"PH7": 0})),
    refused("cached-covered-code-absent", "not_covered", offer="cached_rights",
            basis="cached_rights", rights_=rights({"PH4": 100})),
    refused("cached-covered-negative-clamped-to-0", "not_covered", offer="cached_rights",
            basis="cached_rights", rights_=rights({"PH7": -20})),
    refused("cached-covered-floor-to-0", "not_covered", offer="cached_rights",
            basis="cached_rights", rights_=rights({"PH7": 1}),
            lines=[line(unit=50, base=50, amo=1, amc=49)], due=49),  # 49 * 1 // 100 = 0
    provisional("cached-100-gives-amc", basis="cached_rights", offer="cached_rights",
                rights_=rights({"PH7": 100}), amc=280, due=0),
    provisional("cached-100-amc-below-tm", basis="cached_rights", offer="cached_rights",
                rights_=rights({"PH7": 100}),
                lines=[line(unit=1000, base=1000, amo=650, amc=300)],
                amc=300, due=1000 - 650 - 300),
    provisional("cached-50-odd-tm-floors", basis="cached_rights", offer="cached_rights",
                rights_=rights({"PH7": 50}), lines=[ODD], amc=140, due=801 - 520 - 140),
    provisional("cached-33-floors", basis="cached_rights", offer="cached_rights",
                rights_=rights({"PH7": 33}), lines=[line(unit=7, base=7, amo=0, amc=7)],
                amc=2, due=5),  # 7 * 33 // 100 = 2 (2.31)
    provisional("cached-50-capped-by-line-amc", basis="cached_rights",
                offer="cached_rights", rights_=rights({"PH7": 50}),
                lines=[line(unit=801, base=801, amo=520, amc=100)],
                amc=100, due=801 - 520 - 100),
    provisional("cached-code-absent-line-gets-0", basis="cached_rights",
                offer="cached_rights", rights_=rights({"PH7": 100}),
                lines=[line("PH7"), line("PH4", amc=200)], amc=280,
                due=1600 - 1040 - 280),
    provisional("cached-above-100-clamped", basis="cached_rights", offer="cached_rights",
                rights_=rights({"PH7": 150}), amc=280, due=0),
    # amc_cents > TM is rejected by claims.rules before `decide` runs; only such a line
    # makes the clamp to 100 % visible (unclamped: min(500, 280 * 150 // 100) = 420).
    provisional("cached-above-100-clamped-visible", basis="cached_rights",
                offer="cached_rights", rights_=rights({"PH7": 150}),
                lines=[line(unit=1000, base=800, amo=520, amc=500)], amc=280,
                due=1000 - 520 - 280),
    provisional("cached-negative-clamped-other-line-kept", basis="cached_rights",
                offer="cached_rights", rights_=rights({"PH7": -20, "PH4": 100}),
                lines=[line("PH7"), line("PH4", amc=200)], amc=200,
                due=1600 - 1040 - 200),  # unclamped: 200 - 56 = 144
    provisional("cached-multi-line-mixed", basis="cached_rights", offer="cached_rights",
                rights_=rights({"PH7": 50, "PH4": 100, "PH1": 100}), lines=MULTI,
                amc=122 + 400 + 0,  # PH7: TM 245 * 50 // 100 = 122
                due=MULTI_PRICE - MULTI_AMO - 522),
    # --- 4. caps: per claim ---
    provisional("claim-cap-exact", lines=[AT_CAP], amc=CLAIM_CAP,
                due=100_000 - 60_000 - CLAIM_CAP),
    refused("claim-cap-plus-1", "over_claim_cap", basis="card", lines=[ABOVE_CAP],
            due=40_000),
    provisional("claim-cap-on-granted-not-requested", basis="cached_rights",
                offer="cached_rights", rights_=rights({"PH7": 75}), lines=[
                    line("PH7", unit=100_000, base=100_000, amo=60_000, amc=40_000)],
                amc=CLAIM_CAP, due=40_000 - CLAIM_CAP),  # 40000 * 75 % = 30000
    refused("claim-cap-plus-1-cached", "over_claim_cap", basis="cached_rights",
            offer="cached_rights", rights_=rights({"PH7": 100}), lines=[ABOVE_CAP],
            due=40_000),
    refused("claim-cap-zero", "over_claim_cap", basis="card",
            caps=ProvisionalSettings(max_amc_cents_per_claim=0)),
    # --- 4. caps: per beneficiary per day ---
    provisional("daily-cap-exact", amc=280, due=0,
                exposure=Exposure(DAILY_CAP - 280, 0)),
    refused("daily-cap-plus-1", "over_beneficiary_daily_cap", basis="card",
            exposure=Exposure(DAILY_CAP - 279, 0)),
    refused("daily-cap-plus-1-cached", "over_beneficiary_daily_cap",
            basis="cached_rights", offer="cached_rights", rights_=rights({"PH7": 100}),
            exposure=Exposure(DAILY_CAP - 279, 0)),
    # --- 4. caps: pharmacy outstanding (this one included) ---
    provisional("outstanding-cap-exact", amc=280, due=0,
                exposure=Exposure(0, OUTSTANDING_CAP - 280)),
    refused("outstanding-cap-plus-1", "over_pharmacy_outstanding_cap", basis="card",
            exposure=Exposure(0, OUTSTANDING_CAP - 279)),
    provisional("all-caps-exact-together", lines=[AT_CAP], amc=CLAIM_CAP,
                due=40_000 - CLAIM_CAP,
                exposure=Exposure(DAILY_CAP - CLAIM_CAP, OUTSTANDING_CAP - CLAIM_CAP)),
    # --- 4. order of the cap checks ---
    refused("order-claim-before-daily-and-outstanding", "over_claim_cap", basis="card",
            lines=[ABOVE_CAP], exposure=Exposure(DAILY_CAP, OUTSTANDING_CAP), due=40_000),
    refused("order-daily-before-outstanding", "over_beneficiary_daily_cap", basis="card",
            exposure=Exposure(DAILY_CAP, OUTSTANDING_CAP)),
]

MONEY_FIGURES = ("requested_cents", "granted_cents", "beneficiary_same_day_cents",
                 "pharmacy_outstanding_cents")


def personal_values(person: int = 0) -> list[str]:
    who = PEOPLE[person]
    birth = who["birth_date"]
    return [who["nir"], who["nir"][:13], who["last_name"], who["first_name"], birth,
            birth.replace("-", ""), "A123456"]


def is_money(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@pytest.mark.parametrize(("given", "expected"), CASES)
def test_decide(given: dict[str, Any], expected: dict[str, Any]) -> None:
    claim_in = claim(given["lines"], service=given["service"],
                     valid_from=given["valid_from"], valid_to=given["valid_to"])
    exposure = given["exposure"]
    coverage = decide(claim_in, offer=given["offer"], caps=given["caps"],
                      rights=given["rights"], exposure=exposure)

    assert isinstance(coverage, Coverage)
    assert (coverage.decision, coverage.reason, coverage.basis) == (
        expected["decision"], expected["reason"], expected["basis"])
    assert is_money(coverage.amc_cents) and is_money(coverage.patient_due_cents)
    assert coverage.amc_cents == expected["amc"]
    assert coverage.patient_due_cents == expected["due"]
    assert coverage.patient_due_cents >= 0

    figures = coverage.figures
    assert figures["offer"] == given["offer"]
    assert figures["requested_cents"] == claim_in.amc_requested_cents
    if "granted_cents" in figures:  # reached the caps: every number they used is stored
        assert figures["beneficiary_same_day_cents"] == exposure.beneficiary_same_day
        assert figures["pharmacy_outstanding_cents"] == exposure.pharmacy_outstanding
        if coverage.decision == "provisional":
            assert figures["granted_cents"] == coverage.amc_cents
    else:
        assert coverage.decision == "refused"
        assert coverage.reason not in ("over_claim_cap", "over_beneficiary_daily_cap",
                                       "over_pharmacy_outstanding_cap")
    for key in MONEY_FIGURES:
        if key in figures:
            assert is_money(figures[key]), key

    text = repr(coverage)
    for value in personal_values():
        assert value not in text


@pytest.mark.parametrize("person", range(len(PEOPLE)), ids=[p["last_name"] for p in PEOPLE])
@pytest.mark.parametrize(("offer", "rights_", "exposure"), [
    pytest.param("card", None, Exposure(1234, 5678), id="provisional-card"),
    pytest.param("cached_rights", rights({"PH7": 50}), Exposure(1234, 5678),
                 id="provisional-cached"),
    pytest.param("card", None, Exposure(DAILY_CAP, 0), id="refused-daily-cap"),
    pytest.param("card", None, Exposure(0, OUTSTANDING_CAP), id="refused-outstanding-cap"),
])
def test_figures_hold_the_numbers_and_no_personal_data(
    person: int, offer: str, rights_: CachedRights | None, exposure: Exposure,
) -> None:
    claim_in = claim([ODD], person=person)
    coverage = decide(claim_in, offer=offer, caps=CAPS, rights=rights_, exposure=exposure)
    granted = 281 if offer == "card" else 140
    assert {k: coverage.figures[k] for k in MONEY_FIGURES} == {
        "requested_cents": 281, "granted_cents": granted,
        "beneficiary_same_day_cents": exposure.beneficiary_same_day,
        "pharmacy_outstanding_cents": exposure.pharmacy_outstanding,
    }
    assert all(is_money(coverage.figures[k]) for k in MONEY_FIGURES)
    if offer == "cached_rights":
        assert coverage.figures["guarantees"] == "PH7:50"
    allowed = set(MONEY_FIGURES) | {"offer", "guarantees"}
    assert set(coverage.figures) <= allowed
    text = repr(coverage)
    for value in personal_values(person):
        assert value not in text


@pytest.mark.parametrize(("guarantees", "expected"), [
    pytest.param({"PH7": 100}, 280, id="100"),
    pytest.param({"PH7": 50}, 140, id="50"),
    pytest.param({"PH7": 101}, 280, id="101-clamped"),
    pytest.param({"PH7": -1}, 0, id="minus-1-clamped"),
    pytest.param({}, 0, id="absent"),
])
def test_from_guarantees_is_integer_cents(guarantees: dict[str, int], expected: int) -> None:
    granted = from_guarantees(claim(), guarantees)
    assert is_money(granted)
    assert granted == expected
