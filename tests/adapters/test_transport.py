"""The operators' transport (httpx over aiohttp's sockets) against real sockets on
127.0.0.1: answers come back whole, and each failure says whether the request may have
reached the operator, which decides between a plain resend and a lookup first."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from adapter_samples import operator_claim

from adapters.base import OperatorUnavailable
from adapters.reference import ReferenceAdapter
from adapters.transport import MAX_ANSWER_BYTES, AiohttpTransport, OperatorClient

pytestmark = pytest.mark.anyio
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ACCEPTED = b'{"status":"accepted","reference":"OP-1","amc_cents":280}'


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head, await reader.readexactly(length)


def answer(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status, len(body), body)


async def serving(handler: Handler) -> AsyncIterator[str]:
    """A one-off server on 127.0.0.1 running `handler` per connection; its base URL."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def adapter_for() -> AsyncIterator[Callable[[str], ReferenceAdapter]]:
    clients: list[httpx.AsyncClient] = []

    def make(base_url: str) -> ReferenceAdapter:
        client = OperatorClient(base_url=base_url, transport=AiohttpTransport())
        clients.append(client)
        return ReferenceAdapter("opera", client, timeout_s=0.5)

    yield make
    for client in clients:
        await client.aclose()


async def test_an_answer_comes_back_whole_and_the_connection_is_kept(adapter_for) -> None:
    seen: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(3):
            head, body = await read_request(reader)
            seen.append(head + body)
            writer.write(answer(200, ACCEPTED))
            await writer.drain()

    async for url in serving(handler):
        adapter = adapter_for(url)
        outcomes = [await adapter.submit_claim(operator_claim(f"clm_{i}")) for i in range(3)]
    assert [o.status for o in outcomes] == ["accepted"] * 3
    assert outcomes[0].amc_cents == 280 and outcomes[0].reference == "OP-1"
    assert connections == 1  # kept alive between calls
    assert b"idempotency-key: clm_2" in seen[2].lower()
    assert b'"claim_id":"clm_2"' in seen[2].replace(b" ", b"")


async def test_a_refused_connection_was_not_sent(adapter_for) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OperatorUnavailable) as caught:
        await adapter_for(f"http://127.0.0.1:{port}").submit_claim(operator_claim())
    assert not caught.value.ambiguous
    assert "ConnectError" in caught.value.reason


async def test_a_connection_closed_after_the_request_may_have_been_processed(adapter_for) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)  # read, (maybe) processed, then gone without answering

    async for url in serving(handler):
        with pytest.raises(OperatorUnavailable) as caught:
            await adapter_for(url).submit_claim(operator_claim())
    assert caught.value.ambiguous
    assert "ReadError" in caught.value.reason


async def test_no_answer_in_time_may_have_been_processed(adapter_for) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async for url in serving(handler):
        with pytest.raises(OperatorUnavailable) as caught:
            await adapter_for(url).submit_claim(operator_claim())
    assert caught.value.ambiguous
    assert "Timeout" in caught.value.reason


async def test_a_broken_or_oversized_answer_is_ambiguous(adapter_for) -> None:
    answers = [b"NOT HTTP AT ALL\r\n\r\n", answer(200, b"x" * (MAX_ANSWER_BYTES + 10))]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answers.pop(0))
        await writer.drain()

    async for url in serving(handler):
        for _ in range(2):
            with pytest.raises(OperatorUnavailable) as caught:
                await adapter_for(url).submit_claim(operator_claim())
            assert caught.value.ambiguous


async def test_status_codes_reach_the_adapter(adapter_for) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 503 X\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    async for url in serving(handler):
        with pytest.raises(OperatorUnavailable) as caught:
            await adapter_for(url).submit_claim(operator_claim())
    assert not caught.value.ambiguous and caught.value.retry_after_s == 7.0


async def test_the_operator_client_sends_straight_to_its_transport() -> None:
    """An operator call skips httpx's auth, redirect and cookie handling (none is used):
    the answer comes back read, and no cookie an operator sets is kept or sent back."""
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):
            head, _ = await read_request(reader)
            heads.append(head)
            writer.write(b"HTTP/1.1 200 X\r\nSet-Cookie: s=1; Path=/\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(ACCEPTED), ACCEPTED))
            await writer.drain()

    async for url in serving(handler):
        async with OperatorClient(base_url=url, transport=AiohttpTransport()) as client:
            first = await client.send(client.build_request("POST", "/claims", json={}))
            await client.send(client.build_request("POST", "/claims", json={}))
    assert first.status_code == 200 and first.content == ACCEPTED
    assert first.request.url.path == "/claims"
    assert not client.cookies and b"cookie:" not in heads[1].lower()


async def test_the_operator_client_keeps_httpx_send_for_what_it_skips() -> None:
    """A client given event hooks or credentials gets httpx's own `send` (hooks called,
    credentials sent), and a closed client still refuses to send."""
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        heads.append(head.lower())
        writer.write(answer(200, ACCEPTED))
        await writer.drain()

    hooked: list[int] = []

    async def hook(response: httpx.Response) -> None:
        hooked.append(response.status_code)

    async for url in serving(handler):
        async with OperatorClient(base_url=url, transport=AiohttpTransport(),
                                  event_hooks={"response": [hook]}) as client:
            await client.get("/health")
        async with OperatorClient(base_url=url, transport=AiohttpTransport(),
                                  auth=("gateway", "secret")) as client:
            await client.get("/health")
        closed = OperatorClient(base_url=url, transport=AiohttpTransport())
        await closed.aclose()
        with pytest.raises(RuntimeError):
            await closed.send(closed.build_request("GET", "/health"))
    assert hooked == [200]
    assert b"authorization: basic " in heads[1] and b"authorization" not in heads[0]


async def test_a_claims_request_is_the_one_httpx_would_build() -> None:
    """The adapter encodes a claim's body and gives its headers itself (cheaper than
    httpx's preparation): same URL, same bytes, same headers as `build_request`."""
    async with OperatorClient(base_url="http://127.0.0.1:9/op/", transport=AiohttpTransport(),
                              headers={"X-Gateway": "tiers-payant"}) as client:
        adapter = ReferenceAdapter("opera", client, timeout_s=0.5)
        claim = operator_claim("clm_01J")
        claim.body["beneficiary"]["last_name"] = "Lefèvre"  # not ASCII: UTF-8, as httpx sends
        ours = adapter._request("POST", "/claims", json=claim.body,
                                headers={"Idempotency-Key": claim.idempotency_key})
        theirs = client.build_request("POST", "/claims", json=claim.body,
                                      headers={"Idempotency-Key": claim.idempotency_key})
    assert (ours.method, ours.url) == (theirs.method, theirs.url)
    assert ours.content == theirs.content
    assert sorted(ours.headers.multi_items()) == sorted(theirs.headers.multi_items())


async def test_an_answer_in_a_content_encoding_is_decoded(adapter_for) -> None:
    """Answers are handed over as they came, but one an operator compressed (the request
    accepts gzip, and aiohttp leaves it so) still goes through httpx's decoders."""
    packed = gzip.compress(ACCEPTED)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 X\r\nContent-Type: application/json\r\n"
                     b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(packed), packed))
        await writer.drain()

    async for url in serving(handler):
        outcome = await adapter_for(url).submit_claim(operator_claim())
    assert outcome.status == "accepted" and outcome.reference == "OP-1"
