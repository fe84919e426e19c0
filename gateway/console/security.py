"""Browser-facing defences: strict headers on every answer."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"cross-origin-opener-policy", b"same-origin"),
]


NO_STORE_PREFIXES = ("/v1/", "/console")  # personal data, receipts, sessions: never cached
NO_STORE = [(b"cache-control", b"no-store")]


class SecurityHeadersMiddleware:
    """Adds the headers to every HTTP answer; the API's JSON gains nothing by lacking them.
    Answers of the API and the console are `Cache-Control: no-store` unless they say
    otherwise: a claim, a rights answer or a printed receipt stays out of every cache."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        extra = HEADERS + NO_STORE if scope.get("path", "").startswith(NO_STORE_PREFIXES) \
            else HEADERS

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in extra if name not in present]
            await send(message)

        await self.app(scope, receive, with_headers)
