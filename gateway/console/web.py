"""What every console page shares: templates, the logged-in user, CSRF checks.

The cookie is `HttpOnly`, `SameSite=Strict`, and `Secure` when the gateway is
served over HTTPS. Every form carries the session's CSRF token; a POST without it
(or with another) is refused with 403.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from gateway.errors import GatewayError
from gateway.identity.sessions import ConsoleUser, resume
from gateway.web.deps import ContextDep

COOKIE = "gw_console"
TEMPLATES = Jinja2Templates(directory=Path(__file__).parent.parent / "templates" / "console")


class LoginRequired(GatewayError):
    status, type, title = 303, "login-required", "Please log in"


class CsrfRefused(GatewayError):
    status, type, title = 403, "csrf-refused", "The form's CSRF token is missing or wrong"


class NotForThisRole(GatewayError):
    status, type, title = 403, "forbidden", "This page is not for this key's role"


def secure_cookies(request: Request) -> bool:
    """The scheme comes from the scope: TrustedProxyMiddleware set it from a trusted proxy."""
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=secure_cookies(request))


async def session_user(request: Request, ctx: ContextDep, *, touch: bool) -> ConsoleUser:
    token = request.cookies.get(COOKIE)
    user = await ctx.db.write(lambda s: resume(
        s, token, credentials=ctx.credentials, limits=ctx.settings.console,
        touch=touch)) if token else None
    if user is None:
        raise LoginRequired("log in first", headers={"Location": "/console/login"})
    return user


async def current_user(request: Request, ctx: ContextDep) -> ConsoleUser:
    """The person behind the cookie; their request keeps the session alive."""
    return await session_user(request, ctx, touch=True)


async def refreshing_user(request: Request, ctx: ContextDep) -> ConsoleUser:
    """The same, for the page's own background refresh: it does not count as activity,
    so the idle expiry still ends a session left open on the counter."""
    return await session_user(request, ctx, touch=False)


ConsoleUserDep = Annotated[ConsoleUser, Depends(current_user)]
RefreshingUserDep = Annotated[ConsoleUser, Depends(refreshing_user)]


def role_in(*roles: str, refresh: bool = False) -> Callable[[ConsoleUser], Awaitable[ConsoleUser]]:
    """A dependency: the person, if their role is one of `roles`; `refresh` for the
    page's background refresh (see `refreshing_user`)."""
    def allowed(user: ConsoleUser) -> ConsoleUser:
        if user.principal.role not in roles:
            raise NotForThisRole(f"this page needs the role {' or '.join(roles)}")
        return user

    async def check(user: ConsoleUserDep) -> ConsoleUser:
        return allowed(user)

    async def check_quietly(user: RefreshingUserDep) -> ConsoleUser:
        return allowed(user)

    return check_quietly if refresh else check


async def checked_csrf(user: ConsoleUserDep,
                       csrf_token: Annotated[str, Form()] = "") -> ConsoleUser:
    if not csrf_token or not hmac.compare_digest(csrf_token, user.csrf_token):
        raise CsrfRefused("this form has no valid CSRF token; reload the page")
    return user


CsrfUserDep = Annotated[ConsoleUser, Depends(checked_csrf)]


def page(request: Request, template: str, *, user: ConsoleUser | None = None,
         status_code: int = 200, **context: Any) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(
        request, template, {"user": user, "csrf_token": user.csrf_token if user else "",
                            **context}, status_code=status_code)
