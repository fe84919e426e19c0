"""The operators board: breaker state from this instance, queue counts from the database."""

from __future__ import annotations

from sqlmodel import Session, select

from gateway.context import AppContext
from gateway.models import OperatorControl
from gateway.ops.schemas import OperatorPublic
from gateway.queue import repository


async def board(ctx: AppContext) -> list[OperatorPublic]:
    def load(session: Session) -> tuple[dict[str, dict[str, object]], dict[str, OperatorControl]]:
        controls = {row.operator: row for row in session.exec(select(OperatorControl)).all()}
        return repository.depth(session), controls

    depth, controls = await ctx.db.read(load)
    operators = []
    for operator in ctx.operators:
        stats = depth.get(operator.name, {})
        control = controls.get(operator.name)
        breaker = operator.breaker
        operators.append(OperatorPublic(
            name=operator.name,
            state=breaker.state,  # type: ignore[arg-type]
            state_since=breaker.since,
            paused=bool(control and control.paused),
            paused_by=control.paused_by if control else None,
            pause_reason=control.pause_reason if control else None,
            queued=int(stats.get("queued", 0)),  # type: ignore[call-overload]
            pending=int(stats.get("pending", 0)),  # type: ignore[call-overload]
            failed=int(stats.get("failed", 0)),  # type: ignore[call-overload]
            oldest_queued_at=stats.get("oldest"),  # type: ignore[arg-type]
            last_failure_at=breaker.last_failure_at,
            last_success_at=breaker.last_success_at,
        ))
    return operators
