"""Console accounts page: admins create, disable and reset accounts; operations unlock.

The rules and the audit entries are in `gateway.identity.admin` (shared with the
CLI); a one-time password is shown once, on the answer to the form that made it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.console.views import render
from gateway.console.web import CsrfUserDep, NotForThisRole, role_in
from gateway.context import AppContext
from gateway.errors import NotFound
from gateway.identity import repository as identity_repository
from gateway.identity import users
from gateway.identity.admin import UnknownUser
from gateway.identity.sessions import ConsoleUser
from gateway.storage.unit import UnitOfWork
from gateway.web.deps import ContextDep

router = APIRouter(prefix="/console/users", include_in_schema=False)
StaffDep = Annotated[ConsoleUser, Depends(role_in("operations", "admin"))]
UserIdPath = Annotated[str, Path(max_length=32)]
NOTICES = {"disabled": "Compte désactivé ; ses sessions sont fermées.",
           "mfa_reset": "Second facteur effacé : la personne l'activera à sa prochaine connexion.",
           "unlocked": "Compte déverrouillé."}


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: str
    role: str
    scope: str
    name: str
    email: str
    state: str
    last_login_at: datetime | None


def rows_of(ctx: AppContext, session: UnitOfWork) -> list[AccountRow]:
    rows = []
    for user in identity_repository.all_users(session):
        who = users.profile(user, ctx.cipher)
        rows.append(AccountRow(user.id, user.role, user.finess or user.operators or "—",
                               who.name, who.email or "—", users.state_of(user),
                               user.last_login_at))
    return rows


async def users_page(request: Request, ctx: AppContext, user: ConsoleUser, *,
                     status_code: int = 200, error: str | None = None,
                     notice: str | None = None) -> HTMLResponse:
    rows = await ctx.db.read(lambda s: rows_of(ctx, s))
    return render(request, "users.html", user=user, rows=rows, error=error,
                  notice=NOTICES.get(notice or ""), status_code=status_code,
                  operators=[op.name for op in ctx.operators],
                  is_admin=user.principal.role == "admin")


@router.get("", response_class=HTMLResponse)
async def list_accounts(request: Request, ctx: ContextDep, user: StaffDep,
                        notice: str = "") -> HTMLResponse:
    return await users_page(request, ctx, user, notice=notice)


def admin_only(user: ConsoleUser) -> None:
    if user.principal.role != "admin":
        raise NotForThisRole("only an admin manages accounts")


@router.post("", response_model=None)
async def create_account(
    request: Request, ctx: ContextDep, user: CsrfUserDep,
    role: Annotated[Literal["pharmacist", "operations", "admin"], Form()],
    name: Annotated[str, Form(max_length=200)], email: Annotated[str, Form(max_length=254)],
    finess: Annotated[str, Form(max_length=9)] = "",
    operators: Annotated[list[str] | None, Form()] = None,
    rpps: Annotated[str, Form(max_length=11)] = "",
) -> Response:
    admin_only(user)
    accounts = ctx.accounts()
    try:
        created, password = await ctx.db.write(lambda s: accounts.create(
            s, user.principal, role=role, name=name, email=email, finess=finess or None,
            operators=operators or None, rpps=rpps or None))
    except users.InvalidUserRequest as exc:
        return await users_page(request, ctx, user, status_code=422, error=str(exc))
    return render(request, "user_password.html", user=user, account_id=created.id,
                  email=email.strip(), password=password, created=True)


Action = Literal["disable", "reset-password", "reset-mfa", "unlock"]


@router.post("/{user_id}/{action}", response_model=None)
async def act(request: Request, ctx: ContextDep, user: CsrfUserDep, user_id: UserIdPath,
              action: Annotated[Action, Path()]) -> Response:
    if action != "unlock":
        admin_only(user)
    elif user.principal.role not in ("operations", "admin"):
        raise NotForThisRole("only operations staff and admins unlock accounts")
    accounts = ctx.accounts()
    try:
        if action == "reset-password":
            password = await ctx.db.write(
                lambda s: accounts.reset_password(s, user.principal, user_id))
            return render(request, "user_password.html", user=user, account_id=user_id,
                          email="", password=password, created=False)
        work = {"disable": accounts.disable, "reset-mfa": accounts.reset_mfa,
                "unlock": accounts.unlock}[action]
        await ctx.db.write(lambda s: work(s, user.principal, user_id))
    except UnknownUser:
        raise NotFound(f"no account {user_id}") from None
    notice = {"disable": "disabled", "reset-mfa": "mfa_reset", "unlock": "unlocked"}[action]
    return RedirectResponse(f"/console/users?{urlencode({'notice': notice})}", 303)
