"""FHIR R4 requests made from the synthetic REST bodies (tests/synthetic.py): the same
claim or rights check, spoken as docs/fhir.md's mapping says, element by element."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.fhir import systems

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _money(cents: int) -> dict[str, Any]:
    return {"value": float(Decimal(cents).scaleb(-2)), "currency": "EUR"}


def patient(person: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Patient", "id": "patient",
        "identifier": [{"system": systems.INS_NIR, "value": person["nir"]}],
        "name": [{"use": "official", "family": person["last_name"],
                  "given": [person["first_name"]]}],
        "birthDate": person["birth_date"],
        "multipleBirthInteger": person["birth_rank"],
    }


def coverage(card: dict[str, Any]) -> dict[str, Any]:
    classes = [{"type": {"coding": [{"system": systems.CARD_FIELD, "code": code}]},
                "value": card[field]}
               for code, field in (("convention-type", "convention_type"),
                                   ("routing-criterion", "routing_criterion")) if card[field]]
    return {
        "resourceType": "Coverage", "id": "coverage", "status": "active",
        "beneficiary": {"reference": "#patient"},
        "subscriberId": card["member_number"],
        "payor": [{"identifier": {"system": systems.AMC_INSURER,
                                  "value": card["insurer_number"]}}],
        "period": {"start": card["valid_from"], "end": card["valid_to"]},
        **({"class": classes} if classes else {}),
    }


def fhir_claim(body: dict[str, Any]) -> dict[str, Any]:
    """The FHIR Claim standing for a `/v1/claims` body."""
    return {
        "resourceType": "Claim",
        "contained": [
            patient(body["beneficiary"]),
            {"resourceType": "Organization", "id": "pharmacy",
             "identifier": [{"system": systems.FINESS,
                             "value": body["dispenser"]["finess"]}]},
            {"resourceType": "Practitioner", "id": "prescriber",
             "identifier": [{"system": systems.RPPS, "value": body["prescriber"]["rpps"]}]},
            coverage(body["amc"]),
        ],
        "identifier": [{"system": systems.INVOICE, "value": body["invoice_number"]}],
        "status": "active",
        "type": {"coding": [{"system": systems.CLAIM_TYPE, "code": "pharmacy"}]},
        "use": "claim",
        "patient": {"reference": "#patient"},
        "created": body["service_date"],
        "provider": {"reference": "#pharmacy"},
        "priority": {"coding": [{"system": systems.PROCESS_PRIORITY, "code": "normal"}]},
        "careTeam": [{"sequence": 1, "provider": {"reference": "#prescriber"}}],
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "#coverage"}}],
        "item": [{
            "sequence": index,
            "extension": [
                {"url": systems.BASE_AMOUNT, "valueMoney": _money(line["base_cents"])},
                {"url": systems.AMO_AMOUNT, "valueMoney": _money(line["amo_cents"])},
                {"url": systems.AMC_AMOUNT, "valueMoney": _money(line["amc_cents"])},
            ],
            "category": {"coding": [{"system": systems.PRESTATION, "code": line["code"]}]},
            "productOrService": {"coding": [{"system": systems.CIP, "code": line["product"]}]},
            "servicedDate": body["service_date"],
            "quantity": {"value": line["quantity"]},
            "unitPrice": _money(line["unit_price_cents"]),
        } for index, line in enumerate(body["lines"], start=1)],
    }


def fhir_eligibility(body: dict[str, Any]) -> dict[str, Any]:
    """The CoverageEligibilityRequest standing for a `/v1/rights` body."""
    return {
        "resourceType": "CoverageEligibilityRequest",
        "contained": [patient(body["beneficiary"]), coverage(body["amc"])],
        "status": "active",
        "purpose": ["validation"],
        "patient": {"reference": "#patient"},
        "servicedDate": body["date"],
        "created": body["date"],
        "insurer": {"identifier": {"system": systems.AMC_INSURER,
                                   "value": body["amc"]["insurer_number"]}},
        "insurance": [{"focal": True, "coverage": {"reference": "#coverage"}}],
    }
