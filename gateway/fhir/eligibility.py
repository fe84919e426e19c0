"""FHIR CoverageEligibilityRequest -> our `RightsCheck`, and the rights answer back as a
CoverageEligibilityResponse that says where it came from (the operator, or this
pharmacy's cached answer while the operator is down)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.coverageeligibilityrequest import CoverageEligibilityRequest
from fhir.resources.R4B.coverageeligibilityresponse import CoverageEligibilityResponse
from pydantic import ValidationError

from gateway.claims.presenter import mask_nir
from gateway.fhir import systems
from gateway.fhir.beneficiary import read_coverage, read_patient
from gateway.fhir.reading import Reader
from gateway.rights.schemas import RightsCheck, RightsPublic
from gateway.storage.models import utcnow

PURPOSES = ("validation", "benefits")


def read_eligibility(request: CoverageEligibilityRequest) -> tuple[RightsCheck, Reader]:
    reader = Reader("CoverageEligibilityRequest")
    reader.index_contained(request.contained)
    if request.status != "active":
        reader.fail("CoverageEligibilityRequest.status", "must be active", "value")
    if not set(request.purpose or []) & set(PURPOSES):
        reader.fail("CoverageEligibilityRequest.purpose",
                    f"must include {' or '.join(PURPOSES)}", "value")
    body: dict[str, Any] = {
        "beneficiary": read_patient(reader, request.patient, "CoverageEligibilityRequest.patient"),
        "date": reader.day("date", "CoverageEligibilityRequest.servicedDate",
                           request.servicedDate),
    }
    if not request.insurance or len(request.insurance) != 1:
        reader.fail("CoverageEligibilityRequest.insurance", "exactly one insurance: the AMC card",
                    "value")
    else:
        body["amc"] = read_coverage(reader, request.insurance[0].coverage,
                                    "CoverageEligibilityRequest.insurance[0].coverage",
                                    request.patient)
    reader.check()
    try:
        return RightsCheck.model_validate(body), reader
    except ValidationError as exc:
        raise reader.validation_failed(exc) from None


def eligibility_response(check: RightsCheck, request: CoverageEligibilityRequest,
                         answer: RightsPublic) -> CoverageEligibilityResponse:
    """Known rights: outcome complete, `inforce`, the guarantees as benefits; nothing known
    (operator down, no cached answer): outcome error. The source always in an extension."""
    known = answer.covered is not None
    insurance: dict[str, Any] = {"coverage": {"display": "the request's Coverage"}}
    if known:
        insurance["inforce"] = answer.covered
        if answer.valid_to:
            insurance["benefitPeriod"] = {"end": answer.valid_to.isoformat()}
        insurance["item"] = [_guarantee(code, rate)
                             for code, rate in sorted(answer.guarantees.items())]
    data: dict[str, Any] = {
        "resourceType": "CoverageEligibilityResponse",
        "extension": [_source(answer)],
        "status": "active",
        "purpose": [p for p in request.purpose or [] if p in PURPOSES],
        "patient": {"display": mask_nir(check.beneficiary.nir)},
        "servicedDate": check.on.isoformat(),
        "created": utcnow().isoformat(),
        "request": ({"identifier": request.identifier[0].model_dump(mode="json")}
                    if request.identifier else {"display": "the submitted request"}),
        "outcome": "complete" if known else "error",
        "disposition": _disposition(answer),
        "insurer": {"identifier": {"system": systems.AMC_INSURER,
                                   "value": check.amc.insurer_number}},
        "insurance": [insurance],
    }
    if not known:
        data["error"] = [{"code": {"coding": [{"system": systems.ERROR,
                                               "code": "rights-unknown"}],
                                   "text": "operator unavailable and no cached answer"}}]
    return CoverageEligibilityResponse.model_validate(data)


def _guarantee(code: str, rate: int) -> dict[str, Any]:
    """One guarantee: the share of the ticket modérateur the AMC pays for a prestation."""
    return {"category": {"coding": [{"system": systems.PRESTATION, "code": code}]},
            "benefit": [{"type": {"coding": [{"system": systems.BENEFIT,
                                              "code": "ticket-moderateur-percent"}]},
                         "allowedUnsignedInt": rate}]}


def _source(answer: RightsPublic) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"url": "source", "valueCode": answer.source or "none"}]
    if answer.as_of:
        parts.append({"url": "asOf", "valueDateTime": answer.as_of.isoformat()})
    return {"url": systems.RIGHTS_SOURCE, "extension": parts}


def _disposition(answer: RightsPublic) -> str:
    if answer.source == "operator":
        return "answered by the operator"
    if answer.source == "cache" and answer.as_of:
        return (f"the operator is unavailable: this pharmacy's cached answer of "
                f"{answer.as_of.isoformat()}")
    return "the operator is unavailable and this pharmacy has no cached answer"
