"""Console login through Pro Santé Connect: the redirect out and the callback.

The state, nonce and PKCE verifier travel in a sealed cookie bound to this browser:
a callback carrying someone else's code (login CSRF) or a replayed state is refused.
The callback answers with a page that moves on by itself, so that the strict session
cookie is sent (a redirect chain that began on the provider's site would not send it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from dataclasses import asdict

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.console.auth import refused
from gateway.console.web import page, secure_cookies, set_session_cookie
from gateway.errors import NotFound
from gateway.identity import login, psc_login
from gateway.identity.psc import PendingAuthorization, PscError
from gateway.web.deps import ContextDep

router = APIRouter(prefix="/console/psc", include_in_schema=False)
PENDING_COOKIE = "gw_psc"
PENDING_MAX_AGE_S = 600
CONTEXT = "psc-pending"
log = structlog.get_logger("gateway.console.psc")


def _seal(ctx: ContextDep, pending: PendingAuthorization) -> str:
    sealed = ctx.credentials.seal(json.dumps(asdict(pending)).encode(), context=CONTEXT)
    return base64.urlsafe_b64encode(sealed).decode()


def _open(ctx: ContextDep, cookie: str | None) -> PendingAuthorization | None:
    try:
        sealed = base64.urlsafe_b64decode((cookie or "").encode())
    except (binascii.Error, ValueError):
        return None
    plain = ctx.credentials.open(sealed, context=CONTEXT) if sealed else None
    if plain is None:
        return None
    pending = PendingAuthorization(**json.loads(plain))
    return pending if time.time() - pending.started_at < PENDING_MAX_AGE_S else None


@router.get("/start")
async def start(request: Request, ctx: ContextDep) -> RedirectResponse:
    if ctx.psc is None:
        raise NotFound("Pro Santé Connect is not configured")
    url, pending = await ctx.psc.authorization_url()
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(PENDING_COOKIE, _seal(ctx, pending), httponly=True, samesite="lax",
                        path="/console/psc", max_age=PENDING_MAX_AGE_S,
                        secure=secure_cookies(request))
    return response


@router.get("/callback", response_model=None)
async def callback(request: Request, ctx: ContextDep, code: str = "", state: str = "",
                   error: str = "") -> Response:
    if ctx.psc is None:
        raise NotFound("Pro Santé Connect is not configured")
    pending = _open(ctx, request.cookies.get(PENDING_COOKIE))
    answer: Response
    if error or not code or pending is None or not hmac.compare_digest(state, pending.state):
        log.info("console.psc_refused", reason="state" if not error else "provider_error")
        answer = refused(request, ctx, login.Refused("psc"))
    else:
        try:
            who = await ctx.psc.complete(code=code[:512], pending=pending)
        except PscError as exc:
            log.warning("console.psc_refused", reason=str(exc))
            answer = refused(request, ctx, login.Refused("psc"))
        else:
            outcome = await psc_login.with_psc(ctx, who)
            if isinstance(outcome, login.Refused):
                answer = refused(request, ctx, login.Refused("psc_not_admitted"))
            else:
                answer = _signed_in(request, outcome.token)
    answer.delete_cookie(PENDING_COOKIE, path="/console/psc")
    return answer


def _signed_in(request: Request, token: str) -> HTMLResponse:
    response = page(request, "psc_done.html", home="/console/")
    set_session_cookie(response, request, token)
    return response

