"""Two deployments (two databases) on one Redis server share nothing; two instances of one
deployment (one database) share their breakers. Needs GATEWAY_TEST_REDIS_URL."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from simulator_control import set_fault
from synthetic import claim_body

from adapters.simulator import create_simulator
from gateway.keys.admin import create_key
from gateway.main import create_app
from gateway.settings import Settings
from gateway.storage.db import Database
from gateway.storage.deployment import read_deployment_id
from gateway.storage.migrate import upgrade

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "")
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not REDIS_URL, reason="needs GATEWAY_TEST_REDIS_URL"),
]
OPERA = {"name": "opera", "adapter": "reference", "base_url": "http://opera.test",
         "insurers": ["80*"], "timeout_s": 0.3, "deadline_s": 0.6, "breaker_fail_max": 2,
         "breaker_reset_s": 30, "breaker_reset_max_s": 60, "probe_interval_s": 30}


def deployment(root: Path) -> Settings:
    """A deployment: its own database (migrated, so its own id) and its own keys."""
    settings = Settings(environment="development", data_dir=root / "data",
                        database_url=f"sqlite:///{root / 'gateway.db'}", redis_url=REDIS_URL,
                        operators=[OPERA])
    upgrade(settings.database_url)
    return settings


def deployment_id(settings: Settings) -> str:
    db = Database(settings.database_url)
    try:
        found = db.read_now(read_deployment_id)
    finally:
        db.engine.dispose()
    assert found is not None
    return found


@asynccontextmanager
async def gateway(settings: Settings, simulator: FastAPI) -> AsyncIterator[
        tuple[FastAPI, httpx.AsyncClient]]:
    """One instance, with its workers (the breaker sync among them)."""
    app = create_app(settings, transports={"opera": httpx.ASGITransport(simulator)},
                     configure_logs=False)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url="http://gateway.test") as client:
            await asyncio.sleep(0.3)  # subscribed to its channel
            yield app, client


def breaker_state(app: FastAPI) -> str:
    return str(app.state.context.operators.get("opera").breaker.state)


async def eventually(condition: Callable[[], bool], within_s: float) -> bool:
    ends_at = time.monotonic() + within_s
    while time.monotonic() < ends_at:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


@pytest.fixture
async def redis_client(anyio_backend: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


async def test_an_outage_of_one_deployment_leaves_the_others_breaker_closed(
    tmp_path: Path, redis_client: aioredis.Redis,
) -> None:
    one, other = deployment(tmp_path / "one"), deployment(tmp_path / "other")
    ids = deployment_id(one), deployment_id(other)
    assert ids[0] != ids[1]
    sim_one, sim_other = create_simulator("opera"), create_simulator("opera")
    keys = [{"Authorization": f"Bearer {create_key(s, role='pharmacy', finess='330001231')[1]}"}
            for s in (one, other)]
    try:
        async with AsyncExitStack() as stack:
            app_one, client_one = await stack.enter_async_context(gateway(one, sim_one))
            twin, _ = await stack.enter_async_context(gateway(one, sim_one))  # same database
            app_other, client_other = await stack.enter_async_context(gateway(other, sim_other))
            await set_fault(sim_one, "down")
            for number in range(3):
                answer = await client_one.post("/v1/claims", headers=keys[0],
                                               json=claim_body(f"DOWN{number}"))
                assert answer.status_code == 202, answer.text
            assert breaker_state(app_one) == "open"
            # the instance sharing its database learns it; the other deployment does not
            assert await eventually(lambda: breaker_state(twin) == "open", within_s=2.0)
            await asyncio.sleep(0.5)
            assert breaker_state(app_other) == "closed"
            answer = await client_other.post("/v1/claims", headers=keys[1],
                                             json=claim_body("UP1"))
            assert answer.status_code == 201, answer.text
            assert answer.json()["status"] == "accepted"
            assert breaker_state(app_other) == "closed"
            stored = await redis_client.keys(f"gateway:{ids[0]}:breaker:*")
            assert stored == [f"gateway:{ids[0]}:breaker:opera"]
            assert await redis_client.keys(f"gateway:{ids[1]}:breaker:*") == []
            assert await redis_client.keys("gateway:breaker*") == []  # no shared name left
    finally:
        for found in ids:
            names = [key async for key in redis_client.scan_iter(match=f"gateway:{found}:*")]
            if names:
                await redis_client.delete(*names)
