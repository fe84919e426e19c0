"""The operators board: breaker state from this instance, queue counts from the database.

Least privilege: a pharmacy needs to know whether claims go through, not who paused an
operator, why, or how much waits there; an operations key scoped to some operators sees
only those.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.context import AppContext
from gateway.ops import repository as ops_repository
from gateway.ops.schemas import OperatorPublic, OperatorState
from gateway.queue import repository
from gateway.security.apikeys import Principal
from gateway.storage.models import OperatorControl
from gateway.storage.unit import UnitOfWork

FULL_DETAIL = frozenset({"operations", "admin"})


async def board(ctx: AppContext) -> list[OperatorPublic]:
    """Every operator in full: for operations code that has already checked the caller."""
    def load(session: UnitOfWork
             ) -> tuple[dict[str, repository.Depth], dict[str, OperatorControl]]:
        return repository.depth(session), ops_repository.controls(session)

    depth, controls = await ctx.db.read(load)
    operators = []
    for operator in ctx.operators:
        stats = depth.get(operator.name) or repository.no_depth()
        control = controls.get(operator.name)
        breaker = operator.breaker
        operators.append(OperatorPublic(
            name=operator.name,
            state=breaker.state,
            state_since=breaker.since,
            paused=bool(control and control.paused),
            paused_by=control.paused_by if control else None,
            pause_reason=control.pause_reason if control else None,
            queued=stats["queued"], pending=stats["pending"], failed=stats["failed"],
            exported=stats["exported"], oldest_queued_at=stats["oldest"],
            last_failure_at=breaker.last_failure_at,
            last_success_at=breaker.last_success_at,
        ))
    return operators


async def states(ctx: AppContext) -> list[OperatorState]:
    """Every operator's state and pause, and nothing else (no queue is counted)."""
    controls = await ctx.db.read(ops_repository.controls)
    return [OperatorState(
        name=operator.name,
        state=operator.breaker.state,
        state_since=operator.breaker.since,
        paused=bool((control := controls.get(operator.name)) and control.paused),
    ) for operator in ctx.operators]


async def board_for(
    ctx: AppContext, principal: Principal
) -> Sequence[OperatorPublic | OperatorState]:
    """Pharmacies get the state only; operations keys their own operators; admins all."""
    if principal.role not in FULL_DETAIL:
        return await states(ctx)
    return [row for row in await board(ctx)
            if principal.role == "admin" or principal.may_operate(row.name)]
