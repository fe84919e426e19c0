"""The operations console: the operators board, pause and resume, replay (counted first),
an operator's failed claims, and the keys suspended over a rights budget (lifted here).
Only ids, invoice numbers, FINESS and errors: no personal data.

Every action goes through `gateway.ops.service` or `gateway.keys.service`, which write
their audit entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from gateway.console import repository
from gateway.console.dashboard import operator_status
from gateway.console.views import notice_of, render
from gateway.console.web import CsrfUserDep, role_in
from gateway.context import AppContext
from gateway.errors import NotFound
from gateway.identity.sessions import ConsoleUser
from gateway.keys import repository as keys_repository
from gateway.keys import service as keys_service
from gateway.ops.board import board
from gateway.ops.endpoints import known_operator
from gateway.ops.schemas import OperatorPublic, QueuedClaim, ReplayRequest
from gateway.ops.service import Operations, ReplayRunning
from gateway.security.apikeys import Principal
from gateway.web.deps import ContextDep

router = APIRouter(prefix="/console", include_in_schema=False)
STAFF = ("operations", "admin")
StaffDep = Annotated[ConsoleUser, Depends(role_in(*STAFF))]
StaffOnly = [Depends(role_in(*STAFF))]
OperatorName = Annotated[str, Path(max_length=64)]
ReplayStatus = Annotated[Literal["failed", "queued"], Form()]
KeyId = Annotated[str, Path(max_length=64)]
FAILED_SHOWN = 500
KEY_LIFTED = {"tone": "ok", "text": "Suspension de la clé levée : elle fonctionne de "
                                    "nouveau, ses budgets repartent de zéro.", "claim": ""}


@dataclass(frozen=True, slots=True)
class BoardRow:
    operator: OperatorPublic
    words: str
    rate_per_s: float


async def board_rows(ctx: AppContext, principal: Principal) -> list[BoardRow]:
    """The operators this key may operate, with their drain rate right now."""
    rows = []
    for entry in await board(ctx):
        operator = ctx.operators.get(entry.name)
        if operator is None or not principal.may_operate(entry.name):
            continue
        worker = ctx.drains.get(entry.name)
        draining = entry.state == "closed" and not entry.paused
        rows.append(BoardRow(entry, operator_status(operator, entry.paused).words,
                             worker.current_rate() if worker is not None and draining else 0.0))
    return rows


def back(notice: str, operator: str, **extra: int) -> RedirectResponse:
    query = urlencode({"notice": notice, "operator": operator, **extra})
    return RedirectResponse(f"/console/operations?{query}", status_code=303)


@dataclass(frozen=True, slots=True)
class SuspendedKey:
    id: str
    finess: str | None
    since: datetime
    reason: str | None


async def suspended_keys(ctx: AppContext) -> list[SuspendedKey]:
    rows = await ctx.db.read(keys_repository.suspended_keys)
    return [SuspendedKey(row.id, row.finess, row.suspended_at, row.suspension_reason)
            for row in rows if row.suspended_at is not None]


@router.get("/operations", response_class=HTMLResponse)
async def operations_board(request: Request, ctx: ContextDep, user: StaffDep) -> HTMLResponse:
    rows = await board_rows(ctx, user.principal)
    lifted = request.query_params.get("notice") == "key_lifted"
    return render(request, "operations.html", user=user, rows=rows,
                  suspended_keys=await suspended_keys(ctx),
                  notice=KEY_LIFTED if lifted else notice_of(
                      request, {row.operator.name for row in rows}))


@router.get("/operations/{name}/failed", response_class=HTMLResponse)
async def failed_claims(request: Request, ctx: ContextDep, user: StaffDep,
                        name: OperatorName) -> HTMLResponse:
    operator = known_operator(ctx, user.principal, name)
    rows = await ctx.db.read(lambda s: repository.failed_of_operator(
        s, operator, limit=FAILED_SHOWN))
    claims = [QueuedClaim(id=c.id, invoice_number=c.invoice_number, status=c.status,
                          attempts=c.attempts, last_error=c.last_error, queued_at=c.queued_at)
              for c in rows]
    return render(request, "failed.html", user=user, operator=operator, claims=claims,
                  limit=FAILED_SHOWN)


@router.post("/operations/{name}/pause", dependencies=StaffOnly)
async def pause(ctx: ContextDep, user: CsrfUserDep, name: OperatorName,
                reason: Annotated[str, Form(max_length=500,
                                            pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")] = "",
                ) -> RedirectResponse:
    operator = known_operator(ctx, user.principal, name)
    if not reason.strip():
        return back("reason_missing", operator)
    await Operations.of(ctx).pause(operator, actor=user.principal, reason=reason.strip())
    return back("paused", operator)


@router.post("/operations/{name}/resume", dependencies=StaffOnly)
async def resume(ctx: ContextDep, user: CsrfUserDep, name: OperatorName) -> RedirectResponse:
    operator = known_operator(ctx, user.principal, name)
    await Operations.of(ctx).resume(operator, actor=user.principal)
    return back("resumed", operator)


@router.post("/operations/{name}/replay/count", dependencies=StaffOnly, response_model=None)
async def replay_count(request: Request, ctx: ContextDep, user: CsrfUserDep,
                       name: OperatorName,
                       status: ReplayStatus) -> HTMLResponse | RedirectResponse:
    """The dry run: how many claims the replay would requeue, and the form to confirm it."""
    operator = known_operator(ctx, user.principal, name)
    ask = ReplayRequest(status=status, dry_run=True)
    try:
        _, count = await Operations.of(ctx).replay(operator, actor=user.principal, request=ask)
    except ReplayRunning:
        return back("replay_running", operator)
    return render(request, "replay_confirm.html", user=user, operator=operator,
                  status=status, count=count)


@router.post("/operations/{name}/replay", dependencies=StaffOnly)
async def replay_confirm(ctx: ContextDep, user: CsrfUserDep, name: OperatorName,
                         status: ReplayStatus) -> RedirectResponse:
    operator = known_operator(ctx, user.principal, name)
    ask = ReplayRequest(status=status, dry_run=False)
    try:
        _, count = await Operations.of(ctx).replay(operator, actor=user.principal, request=ask)
    except ReplayRunning:
        return back("replay_running", operator)
    return back("replayed", operator, count=count)


@router.post("/keys/{key_id}/lift", dependencies=StaffOnly)
async def lift_key(ctx: ContextDep, user: CsrfUserDep, key_id: KeyId) -> RedirectResponse:
    """Operations staff (any operator scope) and admins: the key works again."""
    found = await ctx.db.write(lambda s: keys_service.lift(
        s, key_id=key_id, actor=user.principal, audit_log=ctx.audit_log,
        credentials=ctx.credentials))
    if found is None:
        raise NotFound("no such key")
    return RedirectResponse("/console/operations?notice=key_lifted", status_code=303)
