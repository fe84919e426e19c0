"""`/v1/keys`: operations lift a key suspended over a rights budget."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from gateway.errors import NotFound, problem_responses
from gateway.keys import service
from gateway.keys.schemas import KeyStatus
from gateway.security.apikeys import Principal
from gateway.web.deps import ContextDep, require

router = APIRouter(prefix="/v1/keys", tags=["operations"])
OperationsDep = Annotated[Principal, Depends(require("operations", "admin"))]


@router.post("/{key_id}/lift", response_model=KeyStatus,
             responses=problem_responses(401, 403, 404),
             summary="Lift a key's suspension (operations, admin; audited as key.lift)")
async def lift_key(key_id: Annotated[str, Path(max_length=64)], ctx: ContextDep,
                   principal: OperationsDep) -> KeyStatus:
    found = await ctx.db.write(lambda session: service.lift(
        session, key_id=key_id, actor=principal, audit_log=ctx.audit_log,
        credentials=ctx.credentials))
    if found is None:
        raise NotFound("no such key")
    return KeyStatus.of(found[0])
