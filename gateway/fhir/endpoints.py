"""`/fhir/R4/...`: parse a FHIR resource, call the service the REST route calls, answer a
FHIR resource. Same keys, roles, rate limits, idempotency and audit as `/v1/`, because
the same dependencies and services do the work (docs/fhir.md)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.responses import Response
from fhir.resources.R4B.claim import Claim
from fhir.resources.R4B.coverageeligibilityrequest import CoverageEligibilityRequest

from gateway.claims import queries, service
from gateway.claims.schemas import ClaimCreate
from gateway.errors import GatewayError, ValidationFailed
from gateway.fhir import examples
from gateway.fhir.capability import capability_statement
from gateway.fhir.claims import claim_id_of, claim_response, fhir_id, read_claim
from gateway.fhir.eligibility import eligibility_response, read_eligibility
from gateway.fhir.outcomes import fhir_response, install_fhir_errors
from gateway.fhir.parsing import read_resource
from gateway.fhir.reading import Reader
from gateway.fhir.systems import BASE_PATH, INVOICE, MEDIA_TYPE
from gateway.rights import service as rights_service
from gateway.web.deps import ContextDep, PharmacyDep, SubmitterDep, rate_limited

router = APIRouter(prefix=BASE_PATH, tags=["fhir"])
ANY_RESOURCE = {"content": {MEDIA_TYPE: {"schema": {"type": "object"}}}}
DESCRIPTIONS = {
    400: "Not a valid FHIR resource (unknown element included)", 401: "Missing or bad API key",
    403: "Wrong role or wrong pharmacy", 404: "Not found", 409: "Conflict",
    413: "Body too large", 415: "Not application/fhir+json", 422: "Invalid claim or request",
    429: "Rate limited: see Retry-After", 502: "The operator refused the request",
    503: "The gateway's database is unavailable: see Retry-After",
}


class FhirJSON(Response):
    media_type = MEDIA_TYPE


def outcomes(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=`: each error an OperationOutcome."""
    return {status: {"description": f"OperationOutcome: {DESCRIPTIONS.get(status, 'Error')}",
                     **ANY_RESOURCE} for status in statuses}


def body_of(kind: str, example: dict[str, Any]) -> dict[str, Any]:
    """Declared as application/fhir+json only (application/json is accepted too)."""
    return {"requestBody": {"required": True, "description": f"A FHIR R4 {kind}", "content": {
        MEDIA_TYPE: {"schema": {"type": "object"}, "example": example}}}}


@router.get("/metadata", response_class=FhirJSON, summary="The CapabilityStatement",
            responses={200: {"description": "What this FHIR face serves", **ANY_RESOURCE}})
async def metadata(request: Request, ctx: ContextDep) -> Response:
    statement = capability_statement(router.routes, ctx.settings.public_url,
                                     request.app.version)
    return fhir_response(statement)


@router.post(
    "/Claim", response_class=FhirJSON, status_code=201,
    openapi_extra=body_of("Claim", examples.CLAIM),
    summary="Submit a claim; the answer is its ClaimResponse",
    responses={201: {"description": "ClaimResponse: the operator answered", **ANY_RESOURCE},
               202: {"description": "ClaimResponse, outcome queued", **ANY_RESOURCE},
               **outcomes(400, 401, 403, 409, 413, 415, 422, 429, 502)},
)
async def create_claim(
    request: Request,
    ctx: ContextDep,
    principal: SubmitterDep,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)] = None,
    if_none_exist: Annotated[
        str | None, Header(alias="If-None-Exist", min_length=1, max_length=300)] = None,
) -> Response:
    claim_in, reader = read_claim(await read_resource(request, Claim))
    if if_none_exist is not None:
        _check_if_none_exist(if_none_exist, claim_in, reader)
    try:
        result = await service.submit(ctx=ctx, principal=principal, claim_in=claim_in,
                                      idempotency_key=idempotency_key)
    except GatewayError as exc:
        raise reader.as_fhir(exc) from None
    headers = {"Location": f"{BASE_PATH}/ClaimResponse/{fhir_id(result.claim.id)}"}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return fhir_response(claim_response(result.claim), result.http_status, headers)


def _check_if_none_exist(query: str, claim_in: ClaimCreate, reader: Reader) -> None:
    """Only `identifier=<invoice system>|<this Claim's invoice number>`: the invoice number is
    unique per pharmacy, so the create is conditional on it on every path anyway."""
    name, _, value = query.partition("=")
    system, _, code = unquote(value).partition("|")
    if name != "identifier" or system != INVOICE or code != claim_in.invoice_number:
        raise ValidationFailed(
            "If-None-Exist may only name this Claim's own invoice identifier",
            errors=[{"field": "If-None-Exist",
                     "message": f"expected identifier={INVOICE}|<Claim.identifier value>"},
                    {"field": reader.where("invoice_number"),
                     "message": "the invoice identifier If-None-Exist must name"}])


@router.get("/ClaimResponse/{id}", response_class=FhirJSON,
            dependencies=[Depends(rate_limited("reads"))],
            summary="A claim as it stands now, as a ClaimResponse with its history",
            responses={200: {"description": "ClaimResponse", **ANY_RESOURCE},
                       **outcomes(401, 403, 404, 429)})
async def read_claim_response(id: str, ctx: ContextDep, principal: PharmacyDep) -> Response:
    claim = await queries.get(ctx=ctx, principal=principal, claim_id=claim_id_of(id))
    return fhir_response(claim_response(claim))


@router.post(
    "/CoverageEligibilityRequest", response_class=FhirJSON,
    dependencies=[Depends(rate_limited("rights"))],
    openapi_extra=body_of("CoverageEligibilityRequest", examples.ELIGIBILITY_REQUEST),
    summary="Check a beneficiary's rights (cached answer when the operator is down)",
    responses={200: {"description": "CoverageEligibilityResponse", **ANY_RESOURCE},
               **outcomes(400, 401, 403, 413, 415, 422, 429, 502)},
)
async def check_eligibility(request: Request, ctx: ContextDep,
                            principal: PharmacyDep) -> Response:
    resource = await read_resource(request, CoverageEligibilityRequest)
    check, reader = read_eligibility(resource)
    try:
        answer = await rights_service.check(ctx=ctx, request=check, principal=principal)
    except GatewayError as exc:
        raise reader.as_fhir(exc) from None
    return fhir_response(eligibility_response(check, resource, answer))


def install_fhir(app: FastAPI) -> None:
    """The FHIR face: its routes, and its errors as OperationOutcomes. Call after the
    gateway's own error handlers are installed (it wraps them)."""
    app.include_router(router)
    install_fhir_errors(app)
