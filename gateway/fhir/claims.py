"""FHIR Claim -> our `ClaimCreate`, and our `ClaimPublic` -> FHIR ClaimResponse.

The submission itself is `gateway.claims.service.submit`, as for `/v1/claims`: this module
only translates, element by element as docs/fhir.md's mapping table says.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.claim import Claim
from fhir.resources.R4B.claimresponse import ClaimResponse
from pydantic import ValidationError

from gateway.claims.schemas import ClaimCreate, ClaimDetail, ClaimPublic
from gateway.fhir import systems
from gateway.fhir.beneficiary import read_coverage, read_patient
from gateway.fhir.reading import Reader
from gateway.fhir.receipt import money, receipt_extension

AMOUNTS = {"base_cents": systems.BASE_AMOUNT, "amo_cents": systems.AMO_AMOUNT,
           "amc_cents": systems.AMC_AMOUNT}
# exported: handed over in a batch (docs/handover.md), the operator's answer still to come
OUTCOMES = {"pending": "queued", "queued": "queued", "exported": "queued",
            "accepted": "complete", "rejected": "error", "cancelled": "complete",
            "failed": "error"}
CLAIM_PREFIX, FHIR_PREFIX = "clm_", "clm-"  # FHIR ids allow no underscore


def fhir_id(claim_id: str) -> str:
    return claim_id.replace(CLAIM_PREFIX, FHIR_PREFIX, 1)


def claim_id_of(resource_id: str) -> str:
    return resource_id.replace(FHIR_PREFIX, CLAIM_PREFIX, 1)


def read_claim(claim: Claim) -> tuple[ClaimCreate, Reader]:
    """The ClaimCreate a FHIR Claim stands for, and the reader that knows where each field
    came from (to name FHIR elements in the errors the submission may raise)."""
    reader = Reader("Claim")
    reader.index_contained(claim.contained)
    _check_kind(reader, claim)
    body: dict[str, Any] = {
        "invoice_number": reader.identifier("invoice_number", "Claim", claim.identifier,
                                            [systems.INVOICE]),
        "beneficiary": read_patient(reader, claim.patient, "Claim.patient"),
        "dispenser": {"finess": _organisation(reader, claim.provider)},
        "prescriber": {"rpps": _prescriber(reader, claim.careTeam)},
        "lines": [_line(reader, index, item) for index, item in enumerate(claim.item or [])],
    }
    if not claim.insurance or len(claim.insurance) != 1:
        reader.fail("Claim.insurance", "exactly one insurance: the AMC card", "value")
    else:
        body["amc"] = read_coverage(reader, claim.insurance[0].coverage,
                                    "Claim.insurance[0].coverage", claim.patient)
    body["service_date"] = _service_date(reader, claim)
    reader.check()
    try:
        return ClaimCreate.model_validate(body), reader
    except ValidationError as exc:
        raise reader.validation_failed(exc) from None


def _check_kind(reader: Reader, claim: Claim) -> None:
    if claim.status != "active":
        reader.fail("Claim.status", "must be active", "value")
    if claim.use != "claim":
        reader.fail("Claim.use", "must be claim", "value")
    if not any(c.system == systems.CLAIM_TYPE and c.code == "pharmacy"
               for c in (claim.type.coding or [])):
        reader.fail("Claim.type", f"must be {systems.CLAIM_TYPE}#pharmacy", "value")


def _organisation(reader: Reader, reference: Any) -> str | None:
    found = reader.resolve(reference, "Claim.provider", "Organization")
    if found is None:
        return None
    where, organisation = found
    return reader.identifier("dispenser.finess", where, organisation.identifier,
                             [systems.FINESS])


def _prescriber(reader: Reader, team: list[Any] | None) -> str | None:
    if not team or len(team) != 1:
        reader.fail("Claim.careTeam", "exactly one member: the prescriber", "value")
        return None
    found = reader.resolve(team[0].provider, "Claim.careTeam[0].provider", "Practitioner")
    if found is None:
        return None
    where, practitioner = found
    return reader.identifier("prescriber.rpps", where, practitioner.identifier, [systems.RPPS])


def _line(reader: Reader, index: int, item: Any) -> dict[str, Any]:
    where, field = f"Claim.item[{index}]", f"lines[{index}]"
    reader.take(field, where, None)
    line: dict[str, Any] = {
        "product": reader.coded(f"{field}.product", f"{where}.productOrService",
                                item.productOrService, systems.CIP),
        "code": reader.coded(f"{field}.code", f"{where}.category", item.category,
                             systems.PRESTATION),
        "quantity": reader.whole(f"{field}.quantity", f"{where}.quantity.value",
                                 item.quantity.value if item.quantity else None),
        "unit_price_cents": reader.cents(f"{field}.unit_price_cents", f"{where}.unitPrice",
                                         item.unitPrice),
    }
    extensions = {e.url: (i, e) for i, e in enumerate(item.extension or [])}
    for name, url in AMOUNTS.items():
        position, extension = extensions.get(url, (None, None))
        if extension is None:
            reader.fail(f"{where}.extension", f"the extension {url} (valueMoney) is required")
            continue
        line[name] = reader.cents(f"{field}.{name}",
                                  f"{where}.extension[{position}].valueMoney",
                                  extension.valueMoney)
    if item.detail:
        reader.fail(f"{where}.detail", "item details are not supported", "not-supported")
    return line


def _service_date(reader: Reader, claim: Claim) -> str | None:
    """Every item's servicedDate, which must be one day: the claim's service date."""
    if not claim.item:
        reader.fail("Claim.item", "at least one item is required")
        return None
    days = {item.servicedDate for item in claim.item}
    if len(days) != 1 or None in days:
        reader.fail("Claim.item.servicedDate", "every item needs the same servicedDate")
        return None
    return reader.day("service_date", "Claim.item[0].servicedDate", days.pop())


# ---------------------------------------------------------------------- the answer


def claim_response(claim: ClaimPublic) -> ClaimResponse:
    """The claim as it stands, as a ClaimResponse: outcome, amounts, receipt, history."""
    data: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "id": fhir_id(claim.id),
        "meta": {"lastUpdated": claim.updated_at.isoformat()},
        "identifier": [{"system": systems.CLAIM_ID, "value": claim.id}],
        "status": "cancelled" if claim.status == "cancelled" else "active",
        "type": {"coding": [{"system": systems.CLAIM_TYPE, "code": "pharmacy"}]},
        "use": "claim",
        "patient": {"display": claim.nir_masked},
        "created": claim.created_at.isoformat(),
        "insurer": {"identifier": {"system": systems.AMC_INSURER,
                                   "value": claim.insurer_number},
                    "display": claim.operator},
        "request": {"identifier": {"system": systems.INVOICE, "value": claim.invoice_number}},
        "outcome": OUTCOMES[claim.status],
        "disposition": _disposition(claim),
        "total": _totals(claim),
    }
    if claim.rejection:
        data["error"] = [{"code": {"coding": [{"system": systems.REJECTION,
                                               "code": claim.rejection.code,
                                               "display": claim.rejection.label}]}}]
    elif claim.status == "failed":
        data["error"] = [{"code": {"coding": [{"system": systems.ERROR, "code": "failed"}],
                                   "text": "not delivered to the operator"}}]
    if extension := receipt_extension(claim.coverage):
        data["extension"] = [extension]
    if isinstance(claim, ClaimDetail):
        data["processNote"] = [
            {"number": number, "type": "display",
             "text": f"{step.at.isoformat()} {step.status}"
                     + (f": {step.detail}" if step.detail else "")}
            for number, step in enumerate(claim.history, start=1)]
    return ClaimResponse.model_validate(data)


def _disposition(claim: ClaimPublic) -> str:
    text: str = claim.status
    if claim.operator_reference:
        text += f"; operator reference {claim.operator_reference}"
    if claim.cancellation_pending:
        text += "; cancellation sent, not yet confirmed"
    return text


def _totals(claim: ClaimPublic) -> list[dict[str, Any]]:
    totals = [{"category": {"coding": [{"system": systems.ADJUDICATION, "code": "submitted"}]},
               "amount": money(claim.amc_requested_cents)}]
    if claim.amc_covered_cents is not None:
        totals.append({"category": {"coding": [{"system": systems.ADJUDICATION,
                                                "code": "benefit"}]},
                       "amount": money(claim.amc_covered_cents)})
    return totals
