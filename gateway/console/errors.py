"""Errors under /console/ as French HTML pages; the API keeps its problem+json.

`install_console_errors(app)` wraps the handlers `install_error_handlers` put in
place, so it must be called after it. A session that is missing or expired
(`LoginRequired`) still ends on the login page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.console.views import render
from gateway.console.web import CsrfRefused, LoginRequired
from gateway.errors import GatewayError
from gateway.identity.login import LoginGone

Handler = Callable[[Request, Exception], Awaitable[Response]]
PAGES = {
    401: ("Connexion requise", "Connectez-vous à la console pour ouvrir cette page."),
    403: ("Accès refusé", "Cette page n'est pas accessible avec votre clé."),
    404: ("Page introuvable", "Cette page ou cette demande n'existe pas, ou n'appartient "
                              "pas à votre pharmacie."),
    405: ("Action impossible", "Cette page ne s'utilise pas de cette façon."),
    409: ("Action impossible pour l'instant", "Réessayez dans quelques instants."),
    422: ("Formulaire incomplet", "Un champ du formulaire manque ou n'est pas valable. "
                                  "Revenez en arrière et vérifiez-le."),
    429: ("Trop de demandes", "Patientez un peu avant de réessayer."),
    503: ("Service indisponible", "Le service demandé ne répond pas ; réessayez plus tard."),
}
CSRF_PAGE = ("Formulaire expiré", "Ce formulaire n'a pas de jeton de sécurité valable. "
                                  "Rechargez la page, puis recommencez.")
FALLBACK = ("Erreur", "La demande n'a pas pu aboutir ; elle a été consignée.")


def is_console(request: Request) -> bool:
    return request.url.path == "/console" or request.url.path.startswith("/console/")


def error_page(request: Request, status: int, exc: Exception,
               headers: Mapping[str, str] | None = None) -> Response:
    title, text = CSRF_PAGE if isinstance(exc, CsrfRefused) else PAGES.get(status, FALLBACK)
    response = render(request, "error.html", user=None, status_code=status, title=title,
                      text=text, status=status, demo=None)
    for name, value in (headers or {}).items():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def install_console_errors(app: FastAPI) -> None:
    """HTML error pages for /console/* (403, 404 and the rest); JSON elsewhere, as before."""
    previous: dict[type[Exception], Handler] = {  # install_error_handlers' are all async
        kind: cast(Handler, app.exception_handlers[kind])
        for kind in (GatewayError, StarletteHTTPException, RequestValidationError, Exception)
        if kind in app.exception_handlers
    }

    def wrap(kind: type[Exception]) -> Handler:
        async def handle(request: Request, exc: Exception) -> Response:
            if not is_console(request):
                return await previous[kind](request, exc)
            if isinstance(exc, LoginRequired | LoginGone):  # a session gone mid-login too
                return RedirectResponse("/console/login", status_code=303)
            if isinstance(exc, GatewayError):
                return error_page(request, exc.status, exc, exc.headers)
            if isinstance(exc, StarletteHTTPException):
                return error_page(request, exc.status_code, exc, exc.headers)
            if isinstance(exc, RequestValidationError):
                return error_page(request, 422, exc)
            answer = await previous[kind](request, exc)  # logs it, as for the API
            return error_page(request, answer.status_code, exc)  # 503: the database

        return handle

    for kind in previous:
        app.add_exception_handler(kind, wrap(kind))
