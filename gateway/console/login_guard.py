"""Login CSRF: the login forms accept only posts made from the console's own pages.

Before anyone is logged in there is no session to hold a CSRF token, so the login
page sets a random cookie (`SameSite=Strict`, never sent with a cross-site post)
and puts a MAC of it in the form; the post must bring both. Browsers that say where
a request comes from (`Sec-Fetch-Site`, `Origin`) are also held to the same origin.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request
from fastapi.responses import Response

from gateway.console.web import CsrfRefused, secure_cookies
from gateway.context import AppContext

LOGIN_COOKIE = "gw_login"
SAME_SITE = ("same-origin", "none")


def _expected(ctx: AppContext, nonce: str) -> str:
    return ctx.credentials.mac("login-form", {"nonce": nonce})


def login_nonce(request: Request) -> str:
    """The browser's nonce, or a new one (see `remember_nonce`)."""
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    return nonce if 32 <= len(nonce) <= 64 else secrets.token_urlsafe(32)


def form_token(ctx: AppContext, nonce: str) -> str:
    return _expected(ctx, nonce)


def remember_nonce(response: Response, request: Request, nonce: str) -> None:
    response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict",
                        path="/console", max_age=3600, secure=secure_cookies(request))


def same_origin(request: Request) -> bool:
    """False when the browser says the post comes from another site."""
    if request.headers.get("sec-fetch-site", "same-origin") not in SAME_SITE:
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin == own


def check_login_form(ctx: AppContext, request: Request, token: str) -> None:
    """Raise CsrfRefused (403) for a cross-site post or a missing or wrong token."""
    nonce = request.cookies.get(LOGIN_COOKIE) or ""
    if not same_origin(request):
        raise CsrfRefused("this login form was posted from another site")
    if not nonce or not token or not hmac.compare_digest(token, _expected(ctx, nonce)):
        raise CsrfRefused("this login form has no valid token; reload the page")
