"""`/v1/claims`: parse, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import AwareDatetime

from gateway.claims import cancel, queries, service
from gateway.claims.schemas import ClaimCreate, ClaimDetail, ClaimPage, ClaimPublic, ClaimStatus
from gateway.errors import problem_responses
from gateway.web.deps import ContextDep, PharmacyDep, SubmitterDep, rate_limited

router = APIRouter(prefix="/v1/claims", tags=["claims"])


def _answer(response: Response, result: service.SubmitResult) -> ClaimPublic:
    response.status_code = result.http_status
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return result.claim


@router.post(
    "",
    status_code=201,
    response_model=ClaimPublic,
    responses={**problem_responses(401, 403, 409, 413, 422, 429, 502),
               202: {"model": ClaimPublic,
                     "description": "Queued: the operator could not answer in time"}},
    summary="Submit a claim",
)
async def submit_claim(
    claim_in: ClaimCreate,
    ctx: ContextDep,
    principal: SubmitterDep,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> ClaimPublic:
    result = await service.submit(
        ctx=ctx, principal=principal, claim_in=claim_in, idempotency_key=idempotency_key
    )
    return _answer(response, result)


@router.get("", response_model=ClaimPage, dependencies=[Depends(rate_limited("reads"))],
            responses=problem_responses(401, 403, 422, 429),
            summary="List own claims, newest first")
async def list_claims(
    ctx: ContextDep,
    principal: PharmacyDep,
    status: ClaimStatus | None = None,
    operator: Annotated[str | None, Query(max_length=64)] = None,
    since: AwareDatetime | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    return await queries.list_claims(
        ctx=ctx, principal=principal, status=status, operator=operator,
        since=since, cursor=cursor, limit=limit,
    )


@router.get("/{claim_id}", response_model=ClaimDetail,
            dependencies=[Depends(rate_limited("reads"))],
            responses=problem_responses(401, 403, 404, 429), summary="A claim with its history")
async def get_claim(claim_id: str, ctx: ContextDep, principal: PharmacyDep) -> Any:
    return await queries.get(ctx=ctx, principal=principal, claim_id=claim_id)


@router.post("/{claim_id}/cancel", response_model=ClaimPublic,
             responses={**problem_responses(401, 403, 404, 409),
                        202: {"model": ClaimPublic,
                              "description": "Cancellation sent, not yet confirmed"}},
             summary="Cancel a claim (202 while the operator has not confirmed)")
async def cancel_claim(
    claim_id: str, ctx: ContextDep, principal: PharmacyDep, response: Response
) -> ClaimPublic:
    result = await cancel.cancel(ctx=ctx, principal=principal, claim_id=claim_id)
    response.status_code = result.http_status
    return result.claim
