"""One error tree, rendered as RFC 9457 problem+json by one set of handlers.

Messages never carry the submitted values: a validation error names the field,
never echoes what was in it (it may be a NIR).
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger(__name__)


class GatewayError(Exception):
    status: int = 500
    type: str = "internal-error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra


class ValidationFailed(GatewayError):
    status, type, title = 422, "validation-error", "The request is not valid"


class Unauthorized(GatewayError):
    status, type, title = 401, "unauthorized", "Missing or invalid API key"


def invalid_key() -> Unauthorized:
    return Unauthorized("unknown, revoked or expired API key",
                        headers={"WWW-Authenticate": "Bearer"})


class Forbidden(GatewayError):
    status, type, title = 403, "forbidden", "This key may not do that"


class NotFound(GatewayError):
    status, type, title = 404, "not-found", "No such object"


class Conflict(GatewayError):
    status, type, title = 409, "conflict", "Conflict with the current state"


class DuplicateInvoice(Conflict):
    type, title = "duplicate-invoice", "This invoice number was already used with another body"


class ClaimInFlight(Conflict):
    type, title = "in-flight", "The first request with this claim is still being processed"


class NotCancellable(Conflict):
    type, title = "not-cancellable", "The claim cannot be cancelled in its current state"


class IdempotencyKeyReused(GatewayError):
    status, type, title = 422, "idempotency-key-reused", "Idempotency-Key reused with another body"


class UnknownInsurer(GatewayError):
    status, type, title = 422, "unknown-insurer", "No operator handles this insurer number"


class PayloadTooLarge(GatewayError):
    status, type, title = 413, "payload-too-large", "The request body is too large"


class RateLimited(GatewayError):
    status, type, title = 429, "rate-limited", "Too many requests"


class OperatorRefused(GatewayError):
    status, type, title = 502, "operator-refused", "The operator refused the request as malformed"


class OperatorUnavailableError(GatewayError):
    status, type, title = 503, "operator-unavailable", "The operator is unavailable"


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of this API is shaped."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, str]] | None = None


_DESCRIPTIONS = {
    401: "Missing or bad API key", 403: "Wrong role or wrong pharmacy", 404: "Not found",
    409: "Conflict (duplicate invoice, in flight, not cancellable)", 413: "Body over 64 KiB",
    422: "Invalid request: `errors` names each field", 429: "Rate limited: see Retry-After",
    502: "The operator refused the request",
    503: "The operator, or the gateway's own database, is unavailable: see Retry-After",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for the errors an endpoint declares."""
    return {
        status: {
            "model": Problem,
            "description": _DESCRIPTIONS.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def problem(
    status: int, type_: str, title: str, detail: str, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return body


def problem_response(error: GatewayError) -> JSONResponse:
    body = problem(
        error.status, error.type, error.title, error.detail, errors=error.errors, **error.extra
    )
    return JSONResponse(body, status_code=error.status, headers=error.headers,
                        media_type=PROBLEM_JSON)


def field_path(loc: tuple[int | str, ...] | list[int | str]) -> str:
    """('body', 'lines', 0, 'product') -> 'lines[0].product'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _message(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        return "malformed JSON"
    if error.get("type") == "missing":
        return "required"
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def validation_errors(raw: list[dict[str, Any]]) -> list[dict[str, str]]:
    seen: list[dict[str, str]] = []
    for error in raw:
        loc = error.get("loc", ())
        if error.get("type") == "json_invalid":
            loc = ("body",)
        item = {"field": field_path(loc), "message": _message(error)}
        if item not in seen:
            seen.append(item)
    return seen


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(list(exc.errors()))
        fields = ", ".join(e["field"] for e in errors)
        return problem_response(ValidationFailed(f"invalid fields: {fields}", errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and "parsing the body" in str(exc.detail):
            # FastAPI's answer to a body it cannot decode (e.g. not UTF-8): same as bad JSON.
            errors = [{"field": "body", "message": "malformed JSON"}]
            return problem_response(ValidationFailed("invalid fields: body", errors=errors))
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        body = problem(exc.status_code, slug, str(exc.detail), str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers,
                            media_type=PROBLEM_JSON)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        context = getattr(request.app.state, "context", None)
        if context is not None:  # a database used directly: its outage is a 503 too
            exc = context.db.unavailable(exc)
        if isinstance(exc, GatewayError):  # raised where the handler above cannot see it
            return problem_response(exc)
        log.error("request.failed", path=request.url.path, error_type=type(exc).__name__)
        return problem_response(GatewayError("unexpected error; it has been logged"))
