"""Harnesses for the adapter contract suite: an adapter plus a handle on the operator behind it.

A new adapter joins the suite by adding a factory to `FACTORIES`. Kept out of
`conftest.py` so tests can import these names without importing a conftest.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from adapters.base import OperatorAdapter
from adapters.reference import ReferenceAdapter
from adapters.simulator import create_simulator


class SimulatorControl:
    """Drives a simulator's fault injection and reads its ledger over HTTP."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def faults(self, mode: str, latency_ms: int = 0, error_rate: float = 0.0) -> None:
        body = {"mode": mode, "latency_ms": latency_ms, "error_rate": error_rate}
        (await self._client.post("/_faults", json=body)).raise_for_status()

    async def ledger(self) -> dict[str, Any]:
        response = await self._client.get("/_ledger")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def reset(self) -> None:
        await self.faults("ok")
        (await self._client.post("/_ledger/reset")).raise_for_status()


@dataclass(frozen=True)
class Harness:
    adapter: OperatorAdapter
    control: SimulatorControl
    operator: str  # the simulator's name, which prefixes its references


Factory = Callable[..., AbstractAsyncContextManager[Harness]]


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on an ephemeral 127.0.0.1 port in a thread; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def reference_socket(request: pytest.FixtureRequest) -> Factory:
    """The reference adapter over a real socket to the session's uvicorn-served simulator."""
    base_url: str = request.getfixturevalue("simulator_url")

    @asynccontextmanager
    async def make(timeout_s: float = 2.0) -> AsyncIterator[Harness]:
        async with httpx.AsyncClient(base_url=base_url) as client:
            control = SimulatorControl(client)
            await control.reset()
            yield Harness(ReferenceAdapter("opera", client, timeout_s), control, "socket-sim")

    return make


def reference_asgi(request: pytest.FixtureRequest) -> Factory:
    """The reference adapter in process, through httpx.ASGITransport to a fresh simulator."""

    @asynccontextmanager
    async def make(timeout_s: float = 2.0) -> AsyncIterator[Harness]:
        transport = httpx.ASGITransport(app=create_simulator("asgi-sim"))
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi-sim") as client:
            control = SimulatorControl(client)
            yield Harness(ReferenceAdapter("opera", client, timeout_s), control, "asgi-sim")

    return make


FACTORIES: dict[str, Callable[[pytest.FixtureRequest], Factory]] = {
    "reference-socket": reference_socket,
    "reference-asgi": reference_asgi,
}
