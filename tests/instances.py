"""More gateway instances on the test's database (or Redis): what a deployment of N shares."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from gateway.main import create_app
from gateway.settings import Settings

REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "")


def with_limits(settings: Settings, **limits: Any) -> Settings:
    return settings.model_copy(update={"limits": settings.limits.model_copy(update=limits)})


@asynccontextmanager
async def instance(settings: Settings, simulators: dict[str, FastAPI]
                   ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A started gateway app (no workers) and a client of it."""
    transports = {name: httpx.ASGITransport(sim) for name, sim in simulators.items()}
    app = create_app(settings, transports=transports, configure_logs=False, run_workers=False)
    async with LifespanManager(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app), base_url="http://gateway.test") as http:
        yield app, http
