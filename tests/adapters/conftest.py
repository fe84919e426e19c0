"""Fixtures of the adapter contract suite; the harnesses live in `adapter_harness`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from adapter_harness import FACTORIES, Factory, Harness, reference_socket, serve

from adapters.simulator import create_simulator


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def simulator_url() -> Iterator[str]:
    """One simulator served by uvicorn on an ephemeral port for the session."""
    with serve(create_simulator("socket-sim")) as url:
        yield url


@pytest.fixture(
    params=[pytest.param("reference-socket", marks=pytest.mark.slow), "reference-asgi"]
)
def make_harness(request: pytest.FixtureRequest) -> Factory:
    """Every adapter factory in turn: the contract suite runs once per entry."""
    return FACTORIES[request.param](request)


@pytest.fixture
async def harness(make_harness: Factory, anyio_backend: str) -> AsyncIterator[Harness]:
    async with make_harness() as h:
        yield h


@pytest.fixture
def make_socket_harness(request: pytest.FixtureRequest) -> Factory:
    """For faults only a real network shows (timeouts, refused connections)."""
    return reference_socket(request)
