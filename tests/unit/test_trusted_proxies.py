"""TrustedProxyMiddleware: X-Forwarded-For and -Proto believed from trusted peers only."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from gateway.security.proxies import TrustedProxyMiddleware, client_address

pytestmark = pytest.mark.anyio
PROXY = "10.0.0.5"


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """What the app behind the middleware believes about its client."""
    request = Request(scope, receive)
    body = {"client": client_address(request), "port": request.client.port if request.client
            else None, "scheme": scope["scheme"]}
    await JSONResponse(body)(scope, receive, send)


async def seen(trusted: list[str], peer: str,
               headers: dict[str, str] | None = None) -> dict[str, object]:
    app = TrustedProxyMiddleware(echo, trusted=trusted)
    transport = httpx.ASGITransport(app, client=(peer, 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
        return (await http.get("/", headers=headers or {})).json()  # type: ignore[no-any-return]


async def test_an_untrusted_peer_cannot_pick_its_address_or_scheme():
    answer = await seen([PROXY], "127.0.0.1",
                        {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"})
    assert answer == {"client": "127.0.0.1", "port": 4321, "scheme": "http"}


async def test_nothing_is_trusted_by_default():
    answer = await seen([], "127.0.0.1", {"X-Forwarded-For": "203.0.113.7"})
    assert answer["client"] == "127.0.0.1"


async def test_a_trusted_proxy_gives_the_client_it_saw():
    answer = await seen([PROXY], PROXY, {"X-Forwarded-For": "203.0.113.7"})
    assert answer["client"] == "203.0.113.7" and answer["port"] == 0  # its port is unknown


async def test_the_right_most_untrusted_address_wins_over_what_the_client_wrote():
    # The client wrote "198.51.100.1"; the trusted proxy appended the address it saw.
    answer = await seen([PROXY], PROXY, {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"})
    assert answer["client"] == "203.0.113.7"


async def test_several_trusted_hops_are_walked_past():
    answer = await seen(["10.0.0.0/24", "192.168.1.1"], "10.0.0.5",
                        {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 192.168.1.1, 10.0.0.9"})
    assert answer["client"] == "203.0.113.7"


async def test_several_header_lines_form_one_list():
    app = TrustedProxyMiddleware(echo, trusted=[PROXY])
    transport = httpx.ASGITransport(app, client=(PROXY, 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://g") as http:
        headers = [("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-For", "203.0.113.7")]
        assert (await http.get("/", headers=headers)).json()["client"] == "203.0.113.7"


async def test_when_every_hop_is_trusted_the_farthest_one_is_the_client():
    answer = await seen(["10.0.0.0/8"], PROXY, {"X-Forwarded-For": "10.1.1.1, 10.2.2.2"})
    assert answer["client"] == "10.1.1.1"


@pytest.mark.parametrize("chain", ["not-an-address", "203.0.113.7, bogus", "203.0.113.7:80",
                                   "", " , ", "unknown"])
async def test_a_malformed_right_most_entry_keeps_the_peer(chain):
    answer = await seen([PROXY], PROXY, {"X-Forwarded-For": chain})
    assert answer["client"] == PROXY and answer["port"] == 4321


async def test_a_malformed_entry_left_of_the_client_does_not_matter():
    answer = await seen([PROXY], PROXY, {"X-Forwarded-For": "garbage, 203.0.113.7"})
    assert answer["client"] == "203.0.113.7"


async def test_ipv6_peers_networks_and_clients():
    answer = await seen(["2001:db8:1::/48"], "2001:db8:1::5",
                        {"X-Forwarded-For": "2001:DB8:FFFF::0001, 2001:db8:1::9"})
    assert answer["client"] == "2001:db8:ffff::1"  # normalised: one bucket per address
    untrusted = await seen(["2001:db8:1::/48"], "2001:db8:2::5",
                           {"X-Forwarded-For": "2001:db8:ffff::1"})
    assert untrusted["client"] == "2001:db8:2::5"


async def test_an_ipv4_mapped_peer_is_its_ipv4_address():
    answer = await seen([PROXY], f"::ffff:{PROXY}", {"X-Forwarded-For": "203.0.113.7"})
    assert answer["client"] == "203.0.113.7"


async def test_the_forwarded_scheme_is_honoured_from_a_trusted_proxy_only():
    assert (await seen([PROXY], PROXY, {"X-Forwarded-Proto": "https"}))["scheme"] == "https"
    assert (await seen([PROXY], PROXY, {"X-Forwarded-Proto": "HTTPS "}))["scheme"] == "https"
    assert (await seen([PROXY], "10.0.0.6", {"X-Forwarded-Proto": "https"}))["scheme"] == "http"


@pytest.mark.parametrize("proto", ["ftp", "https, http", "javascript", ""])
async def test_an_unexpected_forwarded_scheme_is_ignored(proto):
    answer = await seen([PROXY], PROXY, {"X-Forwarded-Proto": proto})
    assert answer["scheme"] == "http"


async def test_a_trusted_proxy_without_headers_is_the_client():
    answer = await seen([PROXY], PROXY)
    assert answer == {"client": PROXY, "port": 4321, "scheme": "http"}


async def test_client_address_without_a_client():
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    assert client_address(request) == "unknown"
