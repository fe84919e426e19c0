"""`/v1/rights`: a rights check, rate-limited per key (it is what harvesters use)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from gateway.errors import problem_responses
from gateway.rights import service
from gateway.rights.schemas import RightsCheck, RightsPublic
from gateway.web.deps import ContextDep, PharmacyDep, rate_limited

router = APIRouter(prefix="/v1/rights", tags=["rights"])


@router.post("", response_model=RightsPublic, dependencies=[Depends(rate_limited("rights"))],
             responses=problem_responses(401, 403, 413, 422, 429, 502),
             summary="Check a beneficiary's rights (cached answer when the operator is down)")
async def check_rights(
    request: RightsCheck, ctx: ContextDep, principal: PharmacyDep
) -> RightsPublic:
    return await service.check(ctx=ctx, request=request, principal=principal)
