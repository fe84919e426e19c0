"""The per-address limit of public receipt lookups, with and without a trusted proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager

from gateway.main import create_app

pytestmark = pytest.mark.anyio
PROXY = "10.0.0.5"
LIMIT = 3


@asynccontextmanager
async def gateway(settings, simulators, *, peer: str,
                  trusted: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    """The real app, reached from `peer` (what uvicorn would put in `scope["client"]`)."""
    limits = settings.limits.model_copy(update={"receipts_per_minute": LIMIT})
    configured = settings.model_copy(update={"limits": limits, "trusted_proxies": trusted})
    transports = {name: httpx.ASGITransport(sim) for name, sim in simulators.items()}
    app = create_app(configured, transports=transports, configure_logs=False, run_workers=False)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app, client=(peer, 123))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


async def lookup(http: httpx.AsyncClient, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return (await http.get("/v1/receipts/rcp_guess", headers=headers)).status_code


@pytest.mark.parametrize("trusted", [[], [PROXY]])
async def test_rotating_x_forwarded_for_from_an_untrusted_peer_changes_nothing(
        settings, simulators, trusted):
    async with gateway(settings, simulators, peer="127.0.0.1", trusted=trusted) as http:
        answers = [await lookup(http, f"203.0.113.{index}") for index in range(LIMIT + 2)]
    assert answers == [404] * LIMIT + [429, 429]


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket(
        settings, simulators):
    async with gateway(settings, simulators, peer=PROXY, trusted=[PROXY]) as http:
        first = [await lookup(http, "203.0.113.1") for _ in range(LIMIT + 1)]
        second = await lookup(http, "203.0.113.2")
        # what the client writes left of the proxy's own entry does not move it elsewhere
        spoofed = await lookup(http, "198.51.100.9, 203.0.113.1")
    assert first == [404] * LIMIT + [429]
    assert second == 404
    assert spoofed == 429


async def test_a_trusted_proxy_that_forwards_nothing_is_one_client(settings, simulators):
    async with gateway(settings, simulators, peer=PROXY, trusted=[PROXY]) as http:
        answers = [await lookup(http) for _ in range(LIMIT + 1)]
    assert answers == [404] * LIMIT + [429]
