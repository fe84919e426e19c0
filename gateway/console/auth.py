"""Console login and logout with an API key; every attempt is audited."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from gateway.console.sessions import end, open_session
from gateway.console.web import COOKIE, CsrfUserDep, page, set_session_cookie
from gateway.deps import ContextDep
from gateway.security.apikeys import Principal, authenticate

router = APIRouter(prefix="/console", include_in_schema=False)
ANONYMOUS = Principal(key_id="anonymous", role="pharmacy", finess=None, operators=None)


def home_of(principal: Principal) -> str:
    return "/console/" if principal.role == "pharmacy" else "/console/operations"


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    return page(request, "login.html")


@router.post("/login", response_model=None)
async def login(
    request: Request, ctx: ContextDep, key: Annotated[str, Form(max_length=300)] = "",
) -> HTMLResponse | RedirectResponse:
    address = request.client.host if request.client else "unknown"
    throttle = request.app.state.login_throttle
    if (delay := throttle.delay_for(address)) > 0:
        await asyncio.sleep(delay)
    principal = (await ctx.db.read_connection(lambda c: authenticate(c, key.strip()))
                 if key else None)
    if principal is None:
        throttle.failed(address)
        await ctx.db.write(lambda s: ctx.audit_log.append(s, ANONYMOUS, "console.login",
                                                          outcome="refused"))
        return page(request, "login.html", status_code=401,
                    error="Clé inconnue, révoquée ou expirée.")
    throttle.succeeded(address)

    def start(session):  # type: ignore[no-untyped-def]
        ctx.audit_log.append(session, principal, "console.login", object_id=principal.key_id)
        return open_session(session, principal)

    token, _ = await ctx.db.write(start)
    response = RedirectResponse(home_of(principal), status_code=303)
    set_session_cookie(response, request, token)
    return response


@router.post("/logout")
async def logout(ctx: ContextDep, user: CsrfUserDep) -> RedirectResponse:
    def stop(session):  # type: ignore[no-untyped-def]
        end(session, user.token_hash)
        ctx.audit_log.append(session, user.principal, "console.logout",
                             object_id=user.principal.key_id)

    await ctx.db.write(stop)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
