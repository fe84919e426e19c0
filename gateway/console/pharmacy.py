"""The pharmacist's console: the dashboard (and its refreshable fragment), a claim's page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from gateway.claims import queries
from gateway.console.dashboard import load_dashboard
from gateway.console.views import notice_of, render
from gateway.console.web import ConsoleUserDep, role_in
from gateway.identity.sessions import ConsoleUser
from gateway.web.deps import ContextDep

router = APIRouter(prefix="/console", include_in_schema=False)
PharmacistDep = Annotated[ConsoleUser, Depends(role_in("pharmacy"))]
RefreshingPharmacistDep = Annotated[ConsoleUser, Depends(role_in("pharmacy", refresh=True))]


@router.get("/", response_model=None)
async def dashboard(request: Request, ctx: ContextDep,
                    user: ConsoleUserDep) -> HTMLResponse | RedirectResponse:
    """The pharmacist's home; operations and admin staff have theirs on the board."""
    if user.principal.role != "pharmacy":
        return RedirectResponse("/console/operations", status_code=303)
    board = await load_dashboard(ctx, user.principal.finess or "")
    names = {operator.name for operator in ctx.operators}
    return render(request, "dashboard.html", user=user, board=board,
                  notice=notice_of(request, names))


@router.get("/fragments/dashboard", response_class=HTMLResponse)
async def dashboard_fragment(request: Request, ctx: ContextDep,
                             user: RefreshingPharmacistDep) -> HTMLResponse:
    """The dashboard's sections alone, which console.js swaps in every few seconds."""
    board = await load_dashboard(ctx, user.principal.finess or "")
    return render(request, "dashboard_fragment.html", user=user, board=board)


@router.get("/claims/{claim_id}", response_class=HTMLResponse)
async def claim_page(request: Request, ctx: ContextDep, user: PharmacistDep,
                     claim_id: Annotated[str, Path(max_length=40)]) -> HTMLResponse:
    """One claim of this pharmacy with its history; another pharmacy's is a 404."""
    claim = await queries.get(ctx=ctx, principal=user.principal, claim_id=claim_id)
    return render(request, "claim.html", user=user, claim=claim)
