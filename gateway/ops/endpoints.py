"""`/v1/operators`: the board (any role) and the operations verbs (operations, admin)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from gateway.claims.queries import decode_cursor, encode_cursor
from gateway.context import AppContext
from gateway.errors import Forbidden, NotFound, problem_responses
from gateway.ops.board import board, board_for
from gateway.ops.schemas import (
    OperatorPublic,
    OperatorState,
    PauseRequest,
    QueuedClaim,
    QueuePage,
    ReplayProgress,
    ReplayPublic,
    ReplayRequest,
)
from gateway.ops.service import Operations
from gateway.security.apikeys import Principal
from gateway.web.deps import ContextDep, PrincipalDep, rate_limited, require

router = APIRouter(prefix="/v1/operators", tags=["operations"])
OperationsDep = Annotated[Principal, Depends(require("operations", "admin"))]


def known_operator(ctx: AppContext, principal: Principal, name: str) -> str:
    if ctx.operators.get(name) is None:
        raise NotFound(f"no operator {name!r}")
    if not principal.may_operate(name):
        raise Forbidden(f"this key is not scoped to operator {name!r}")
    return name


@router.get("", response_model=list[OperatorPublic | OperatorState],
            dependencies=[Depends(rate_limited("reads"))],
            responses=problem_responses(401, 429),
            summary="The operators' breaker state and pause; their queues for operations",
            description="A pharmacy key gets each operator's state only (`OperatorState`). "
                        "An operations key gets its operators in full (`OperatorPublic`): "
                        "all of them when it is not scoped; an admin key gets every one.")
async def list_operators(ctx: ContextDep,
                         principal: PrincipalDep) -> Sequence[OperatorPublic | OperatorState]:
    return await board_for(ctx, principal)


@router.post("/{name}/pause", response_model=OperatorPublic,
             responses=problem_responses(401, 403, 404, 413, 422),
             summary="Send nothing to this operator until resumed (survives restarts)")
async def pause(name: str, ctx: ContextDep, principal: OperationsDep,
                request: PauseRequest | None = None) -> OperatorPublic:
    operator = known_operator(ctx, principal, name)
    reason = request.reason if request else ""
    await Operations.of(ctx).pause(operator, actor=principal, reason=reason)
    return next(o for o in await board(ctx) if o.name == operator)


@router.post("/{name}/resume", response_model=OperatorPublic,
             responses=problem_responses(401, 403, 404), summary="Resume sending")
async def resume(name: str, ctx: ContextDep, principal: OperationsDep) -> OperatorPublic:
    operator = known_operator(ctx, principal, name)
    await Operations.of(ctx).resume(operator, actor=principal)
    return next(o for o in await board(ctx) if o.name == operator)


@router.post("/{name}/replay", response_model=ReplayPublic,
             responses=problem_responses(401, 403, 404, 409, 413, 422),
             summary="Requeue failed or queued claims (dry_run counts them)")
async def replay(name: str, request: ReplayRequest, ctx: ContextDep,
                 principal: OperationsDep) -> ReplayPublic:
    operator = known_operator(ctx, principal, name)
    replay_id, count = await Operations.of(ctx).replay(operator, actor=principal,
                                                       request=request)
    return ReplayPublic(replay_id=replay_id, count=count, dry_run=request.dry_run)


@router.get("/{name}/replay", response_model=ReplayProgress,
            dependencies=[Depends(rate_limited("reads"))],
            responses=problem_responses(401, 403, 404, 429),
            summary="The latest replay's progress")
async def replay_progress(name: str, ctx: ContextDep,
                          principal: OperationsDep) -> ReplayProgress:
    operator = known_operator(ctx, principal, name)
    progress = await Operations.of(ctx).latest_replay(operator)
    if progress is None:
        raise NotFound(f"no replay of {operator!r} yet")
    return progress


@router.get("/{name}/queue", response_model=QueuePage,
            dependencies=[Depends(rate_limited("reads"))],
            responses=problem_responses(401, 403, 404, 422, 429),
            summary="Queued, pending and failed claims; no personal data")
async def queue(
    name: str, ctx: ContextDep, principal: OperationsDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> QueuePage:
    operator = known_operator(ctx, principal, name)
    after = decode_cursor(cursor) if cursor else None
    claims = await Operations.of(ctx).queue(operator, limit=limit + 1, after_id=after)
    page = claims[:limit]
    return QueuePage(
        claims=[QueuedClaim(id=c.id, invoice_number=c.invoice_number, status=c.status,
                            attempts=c.attempts, last_error=c.last_error, queued_at=c.queued_at)
                for c in page],
        next=encode_cursor(page[-1].id) if len(claims) > limit else None,
    )
