"""Every error under /fhir/ as an OperationOutcome, with the HTTP status the REST API gives.

The gateway's errors are one tree rendered as problem+json (gateway.errors). Under
/fhir/ the same errors are re-expressed, never re-decided: the exception handlers are
wrapped (as the console's are) and the few answers made by middleware before any route
(413 body too large, 503 while stopping) are converted at the edge. Each issue carries the
problem's `type` as a coding, the message as text, and, when an element is at fault, its
FHIRPath as `expression`; a header at fault is named in `diagnostics`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fhir.resources.R4B.operationoutcome import OperationOutcome
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import PROBLEM_JSON, GatewayError
from gateway.fhir.systems import BASE_PATH, ERROR, MEDIA_TYPE

Handler = Callable[[Request, Exception], Awaitable[Response]]
FHIRPATH = re.compile(r"^[A-Z][A-Za-z]+(\.|\[|$)")  # starts with a resource type
ISSUE_CODES = {
    400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
    409: "conflict", 412: "duplicate", 413: "too-long", 415: "not-supported",
    422: "invalid", 429: "throttled", 502: "exception", 503: "transient",
}
TYPE_CODES = {"duplicate-invoice": "duplicate", "idempotency-key-reused": "duplicate",
              "in-flight": "conflict", "rate-limited": "throttled",
              "rights-budget-exceeded": "throttled", "key-suspended": "suspended",
              "unknown-insurer": "business-rule"}


def is_fhir(path: str) -> bool:
    return path == BASE_PATH or path.startswith(f"{BASE_PATH}/") or path.startswith("/fhir/")


def outcome_of(problem: Mapping[str, Any]) -> OperationOutcome:
    """The OperationOutcome saying what a problem+json body says."""
    status = int(problem.get("status", 500))
    kind = str(problem.get("type", "internal-error"))
    default = TYPE_CODES.get(kind, ISSUE_CODES.get(status, "exception"))
    coding = [{"system": ERROR, "code": kind, "display": str(problem.get("title", kind))}]
    issues: list[dict[str, Any]] = []
    for error in problem.get("errors") or []:
        field, message = str(error.get("field", "")), str(error.get("message", "invalid"))
        issue: dict[str, Any] = {"severity": "error", "code": error.get("code", default),
                                 "details": {"coding": coding, "text": message}}
        if FHIRPATH.match(field):
            issue["expression"] = [field]
        else:
            issue["diagnostics"] = f"{field}: {message}"
        issues.append(issue)
    if not issues:
        issues.append({"severity": "error" if status < 500 else "fatal", "code": default,
                       "details": {"coding": coding, "text": str(problem.get("detail", ""))}})
    else:
        issues[0]["diagnostics"] = issues[0].get("diagnostics") or str(problem.get("detail"))
    return OperationOutcome.model_validate({"resourceType": "OperationOutcome",
                                            "issue": issues})


def fhir_response(resource: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> Response:
    """A resource serialized by its model, as application/fhir+json."""
    return Response(resource.model_dump_json(), status_code=status,
                    headers=dict(headers or {}), media_type=MEDIA_TYPE)


def _outcome_response(answer: Response) -> Response:
    """A problem+json answer re-expressed as an OperationOutcome; its headers kept."""
    problem = json.loads(bytes(answer.body))
    headers = {name: value for name, value in answer.headers.items()
               if name.lower() not in ("content-type", "content-length")}
    return fhir_response(outcome_of(problem), answer.status_code, headers)


def install_fhir_errors(app: FastAPI) -> None:
    """Wrap the gateway's handlers: under /fhir/, their answer as an OperationOutcome."""
    previous: dict[type[Exception], Handler] = {
        kind: cast(Handler, app.exception_handlers[kind])
        for kind in (GatewayError, StarletteHTTPException, RequestValidationError, Exception)
        if kind in app.exception_handlers
    }

    def wrap(kind: type[Exception]) -> Handler:
        async def handle(request: Request, exc: Exception) -> Response:
            answer = await previous[kind](request, exc)
            if not is_fhir(request.url.path) or not answer.media_type == PROBLEM_JSON:
                return answer
            return _outcome_response(answer)

        return handle

    for kind in previous:
        app.add_exception_handler(kind, wrap(kind))
    app.add_middleware(OutcomeMiddleware)


class OutcomeMiddleware:
    """The problem+json answers middleware makes under /fhir/ (413, 503 while stopping, a NUL
    in the URL), re-expressed as OperationOutcomes; every other answer passes untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_fhir(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def send_converted(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(PROBLEM_JSON.encode()):
                    held.append(message)
                    return
            elif held:
                held.append(message)
                if message.get("more_body", False):
                    return
                await _send_outcome(held, send)
                return
            await send(message)

        await self.app(scope, receive, send_converted)


async def _send_outcome(held: list[Message], send: Send) -> None:
    start, body = held[0], b"".join(m.get("body", b"") for m in held[1:])
    problem = json.loads(body)
    converted = outcome_of(problem).model_dump_json().encode()
    headers = [(name, value) for name, value in start.get("headers", [])
               if name not in (b"content-type", b"content-length")]
    headers += [(b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(converted)).encode())]
    await send({"type": "http.response.start", "status": start["status"], "headers": headers})
    await send({"type": "http.response.body", "body": converted})
