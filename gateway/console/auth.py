"""Console login for people: password, then (first time) a new password and TOTP
enrolment, then the second factor; logout here or everywhere. API keys do not log in.

The rules (counting attempts, locking, auditing) are in `gateway.identity.login`;
these routes parse forms, guard them against cross-site posts and render pages.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from gateway.console.login_guard import (
    check_login_form,
    form_token,
    login_nonce,
    remember_nonce,
    same_origin,
)
from gateway.console.web import (
    COOKIE,
    CsrfRefused,
    CsrfUserDep,
    LoginRequired,
    page,
    set_session_cookie,
)
from gateway.identity import login, second_factor, sessions
from gateway.identity.passwords import MAX_LENGTH, WeakPassword
from gateway.security.apikeys import Principal
from gateway.security.proxies import client_address
from gateway.storage.models import ConsoleSession
from gateway.storage.unit import UnitOfWork
from gateway.web.deps import ContextDep

router = APIRouter(prefix="/console", include_in_schema=False)
STEP_URLS = {"password": "/console/login/password", "enrol": "/console/login/enrol",
             "second_factor": "/console/login/code"}
REFUSALS = {
    "bad_credentials": (401, "Identifiant ou mot de passe incorrect."),
    "bad_code": (401, "Code incorrect ou déjà utilisé."),
    "locked": (403, "Compte verrouillé après trop d'échecs : demandez à l'exploitation de "
                    "le déverrouiller."),
    "throttled": (429, "Trop de tentatives depuis cette adresse : réessayez plus tard."),
    "psc": (401, "La connexion Pro Santé Connect n'a pas abouti ou n'a pas pu être "
                 "vérifiée. Recommencez."),
    "psc_not_admitted": (403, "Votre exercice ne vous rattache à aucune pharmacie servie par "
                              "cette passerelle. Demandez à un administrateur de lier votre "
                              "numéro RPPS à votre pharmacie."),
}
PasswordField = Annotated[str, Form(max_length=MAX_LENGTH)]
CodeField = Annotated[str, Form(max_length=login.CODE_MAX)]


def home_of(principal: Principal) -> str:
    return "/console/" if principal.role == "pharmacy" else "/console/operations"


def login_page(request: Request, ctx: ContextDep, *, status_code: int = 200,
               error: str | None = None) -> HTMLResponse:
    nonce = login_nonce(request)
    response = page(request, "login.html", status_code=status_code, error=error,
                    psc=ctx.psc is not None, login_token=form_token(ctx, nonce))
    remember_nonce(response, request, nonce)
    return response


def refused(request: Request, ctx: ContextDep, outcome: login.Refused) -> HTMLResponse:
    status, text = REFUSALS.get(outcome.reason, REFUSALS["bad_credentials"])
    response = login_page(request, ctx, status_code=status, error=text)
    if outcome.retry_after_s:
        response.headers["Retry-After"] = str(outcome.retry_after_s)
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, ctx: ContextDep) -> HTMLResponse:
    return login_page(request, ctx)


@router.post("/login", response_model=None)
async def login_with_password(
    request: Request, ctx: ContextDep,
    email: Annotated[str, Form(max_length=254)] = "", password: PasswordField = "",
    login_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    check_login_form(ctx, request, login_token)
    outcome = await login.with_password(ctx, email=email.strip(), password=password,
                                        address=client_address(request))
    if isinstance(outcome, login.Refused):
        return refused(request, ctx, outcome)
    response = RedirectResponse(STEP_URLS[outcome.stage], status_code=303)
    set_session_cookie(response, request, outcome.token)
    return response


async def pending_login(request: Request, ctx: ContextDep) -> ConsoleSession:
    """The session of a login still at one of its steps."""
    token = request.cookies.get(COOKIE)
    found = await ctx.db.write(lambda s: sessions.find(
        s, token, credentials=ctx.credentials, limits=ctx.settings.console)) if token else None
    if found is None or found[0].stage == sessions.ACTIVE:
        raise LoginRequired("log in first", headers={"Location": "/console/login"})
    return found[0]


PendingDep = Annotated[ConsoleSession, Depends(pending_login)]


def at_step(row: ConsoleSession, stage: str) -> RedirectResponse | None:
    return None if row.stage == stage else RedirectResponse(STEP_URLS[row.stage], 303)


def check_step_form(request: Request, row: ConsoleSession, csrf_token: str) -> None:
    if not same_origin(request) or not hmac.compare_digest(csrf_token, row.csrf_token):
        raise CsrfRefused("this form has no valid CSRF token; reload the page")


CsrfField = Annotated[str, Form(max_length=128)]


@router.get("/login/password", response_model=None)
async def new_password_form(request: Request, row: PendingDep) -> Response:
    return at_step(row, "password") or page(request, "login_password.html",
                                            step_csrf=row.csrf_token)


@router.post("/login/password", response_model=None)
async def new_password(request: Request, ctx: ContextDep, row: PendingDep,
                       password: PasswordField = "", confirmation: PasswordField = "",
                       csrf_token: CsrfField = "") -> Response:
    check_step_form(request, row, csrf_token)
    if (wrong := at_step(row, "password")) is not None:
        return wrong
    try:
        stage = await login.change_password(ctx, row=row, password=password,
                                            confirmation=confirmation)
    except WeakPassword as exc:
        return page(request, "login_password.html", status_code=422, error=str(exc),
                    step_csrf=row.csrf_token)
    return RedirectResponse(STEP_URLS[stage], status_code=303)


async def enrolment_page(request: Request, ctx: ContextDep, row: ConsoleSession, *,
                         status_code: int = 200, error: str | None = None) -> HTMLResponse:
    secret, account = await login.enrolment_secret(ctx, row=row)
    uri = second_factor.provisioning_uri(secret, account or row.user_id)
    return page(request, "login_enrol.html", status_code=status_code, error=error,
                step_csrf=row.csrf_token, qr_svg=second_factor.qr_svg(uri),
                secret=" ".join(secret[i:i + 4] for i in range(0, len(secret), 4)))


@router.get("/login/enrol", response_model=None)
async def enrol_form(request: Request, ctx: ContextDep, row: PendingDep) -> Response:
    return at_step(row, "enrol") or await enrolment_page(request, ctx, row)


@router.post("/login/enrol", response_model=None)
async def enrol(request: Request, ctx: ContextDep, row: PendingDep, code: CodeField = "",
                csrf_token: CsrfField = "") -> Response:
    check_step_form(request, row, csrf_token)
    if (wrong := at_step(row, "enrol")) is not None:
        return wrong
    outcome = await login.confirm_enrolment(ctx, row=row, code=code,
                                            address=client_address(request))
    if isinstance(outcome, login.Refused):
        status, text = REFUSALS["bad_code" if outcome.reason == "bad_credentials"
                                else outcome.reason]
        return await enrolment_page(request, ctx, row, status_code=status, error=text)
    return page(request, "login_recovery_codes.html", codes=outcome.recovery_codes,
                home="/console/")


def code_page(request: Request, row: ConsoleSession, *, status_code: int = 200,
              error: str | None = None) -> HTMLResponse:
    demo = getattr(request.app.state, "demo", None)
    demo_codes = ({email: second_factor.current_code(secret)
                   for email, secret in demo.second_factors.items()}
                  if demo is not None else None)
    return page(request, "login_code.html", status_code=status_code, error=error,
                step_csrf=row.csrf_token, demo_codes=demo_codes)


@router.get("/login/code", response_model=None)
async def code_form(request: Request, row: PendingDep) -> Response:
    return at_step(row, "second_factor") or code_page(request, row)


@router.post("/login/code", response_model=None)
async def second_step(request: Request, ctx: ContextDep, row: PendingDep,
                      code: CodeField = "", csrf_token: CsrfField = "") -> Response:
    check_step_form(request, row, csrf_token)
    if (wrong := at_step(row, "second_factor")) is not None:
        return wrong
    outcome = await login.second_factor_step(ctx, row=row, code=code,
                                             address=client_address(request))
    if isinstance(outcome, login.Refused):
        if outcome.reason in ("locked", "throttled"):
            return refused(request, ctx, outcome)
        return code_page(request, row, status_code=401, error=REFUSALS["bad_code"][1])
    return RedirectResponse("/console/", status_code=303)


@router.post("/logout")
async def logout(ctx: ContextDep, user: CsrfUserDep) -> RedirectResponse:
    def stop(session: UnitOfWork) -> None:
        sessions.end(session, user.token_hash, ctx.credentials)
        ctx.audit_log.append(session, user.principal, "console.logout",
                             object_id=user.user_id)

    await ctx.db.write(stop)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.post("/logout-everywhere")
async def logout_everywhere(ctx: ContextDep, user: CsrfUserDep) -> RedirectResponse:
    """Ends every session of this person, on every browser (a lost or shared computer)."""
    accounts = ctx.accounts()
    await ctx.db.write(lambda s: accounts.log_out_everywhere(s, user.principal, user.user_id))
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
