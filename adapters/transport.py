"""httpx's transport on aiohttp's connection pool: the operators' client, made cheap.

Why: every claim is one call to its operator, and httpx's own pool (httpcore over
anyio) cost ~1.1 ms of CPU per call at 16 concurrent calls on these cores (~0.65 ms
for one at a time), as much as storing the claim. The adapters keep speaking httpx
(requests, responses, errors; tests plug their own transports); only the sockets are
aiohttp's, ~0.3 ms per call with httpx's request and response objects around it.

Errors are sorted as the adapters need them, by whether the request may have reached
the operator: a refused or failed connection or a connect timeout is `ConnectError`/
`ConnectTimeout` (nothing sent); anything after that (reset, disconnect, read timeout,
a broken answer) is a read error, ambiguous. (The `httpx-aiohttp` package maps a
server disconnect to `ConnectTimeout`, "not sent", which would resend blind.)
"""

from __future__ import annotations

import aiohttp
import httpx

MAX_ANSWER_BYTES = 1 << 20  # an operator's answer is a few hundred bytes


class OperatorClient(httpx.AsyncClient):
    """httpx's client with `send` cut to what an operator call uses.

    Operator calls use no auth, no redirects, no cookies, no event hooks and no streamed
    answers; `AsyncClient.send` still walks its auth and redirect flows and turns every
    answer into a cookie-jar request for the standard library (~18 % of a call's CPU,
    measured with py-spy under load). A call that asks for any of those, or a client
    configured with any, goes through httpx's own `send`."""

    async def send(self, request: httpx.Request, *, stream: bool = False,
                   auth: httpx._types.AuthTypes | httpx._client.UseClientDefault | None
                   = httpx.USE_CLIENT_DEFAULT,
                   follow_redirects: bool | httpx._client.UseClientDefault
                   = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        if (stream or auth is not httpx.USE_CLIENT_DEFAULT or follow_redirects is True
                or self.auth is not None or self.follow_redirects or self.is_closed
                or any(self.event_hooks.values())):
            return await super().send(request, stream=stream, auth=auth,
                                      follow_redirects=follow_redirects)
        response = await self._transport_for_url(request.url).handle_async_request(request)
        response.request = request
        await response.aread()
        return response


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends httpx requests over one aiohttp session (created on first use, in the
    running loop), keeping up to `limits.max_connections` connections alive."""

    def __init__(self, limits: httpx.Limits | None = None) -> None:
        self._limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                # under the usual 5 s of servers: a connection is not reused just as
                # the server closes it (that send would fail, maybe processed)
                keepalive_timeout=min(self._limits.keepalive_expiry or 2.0, 2.0),
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, trust_env=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {})
        connect = timeout.get("connect")
        try:
            async with self._client().request(
                request.method, str(request.url), headers=list(request.headers.multi_items()),
                data=request.content or None, allow_redirects=False, compress=None,
                timeout=aiohttp.ClientTimeout(sock_connect=connect, connect=timeout.get("pool"),
                                              sock_read=timeout.get("read")),
            ) as answer:
                content = await answer.content.read(MAX_ANSWER_BYTES + 1)
                if len(content) > MAX_ANSWER_BYTES:
                    raise httpx.RemoteProtocolError("answer too large", request=request)
                return _response(answer.status, list(answer.raw_headers), content, request,
                                 encoded="Content-Encoding" in answer.headers)
        except aiohttp.ConnectionTimeoutError as exc:  # before the request was written
            raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
        except aiohttp.ClientConnectorError as exc:  # refused, unreachable: nothing sent
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (TimeoutError, aiohttp.SocketTimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
        except aiohttp.ClientError as exc:  # reset, disconnect, broken answer: maybe processed
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _response(status: int, headers: list[tuple[bytes, bytes]], content: bytes,
              request: httpx.Request, *, encoded: bool) -> httpx.Response:
    """The answer as httpx's response, already read. An answer in a content encoding
    (which aiohttp does not undo here) goes through httpx's decoders; any other is handed
    over as it came: httpx's reading of a body it already holds, through its chunker and
    decoders, cost ~10 µs a call of what `OperatorClient.send`'s `aread` then skips."""
    extensions = {"http_version": b"HTTP/1.1"}
    if encoded:
        return httpx.Response(status, headers=headers, content=content, request=request,
                              extensions=extensions)
    response = httpx.Response(status, headers=headers, stream=httpx.ByteStream(content),
                              request=request, extensions=extensions)
    response._content = content  # what httpx's own read leaves: `aread` returns it
    return response
