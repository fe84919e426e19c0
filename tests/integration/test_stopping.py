"""A stopping instance refuses new work with 503 so its clients go elsewhere, and says so.

The signal handling itself: the first SIGTERM starts the pause (`shutdown_delay_s`) and
only then lets uvicorn close its listener; a second one skips what is left of it. The
whole rolling restart, with real processes: tests/e2e/test_e2e_rolling_restart.py.
"""

from __future__ import annotations

import signal
import time

import pytest
import uvicorn
from synthetic import claim_body

from gateway.web.serving import GracefulServer, StopSignal

pytestmark = pytest.mark.anyio


async def test_once_stopping_new_requests_get_503_and_readyz_says_so(app, client, pharmacy):
    assert (await client.get("/readyz")).status_code == 200
    app.state.stop_signal.set()
    refused = await client.post("/v1/claims", json=claim_body("S1"), headers=pharmacy)
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "shutting-down"
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["Connection"] == "close"
    assert (await client.get("/readyz")).status_code == 503
    assert (await client.get("/healthz")).status_code == 200  # the process is still up
    listed = await client.get("/v1/claims", headers=pharmacy)
    assert listed.status_code == 503  # nothing half-answered either


def _server(delay_s: float) -> tuple[GracefulServer, StopSignal]:
    stop = StopSignal()
    return GracefulServer(uvicorn.Config(lambda *a: None), stop, delay_s), stop


def test_the_first_signal_pauses_before_uvicorn_stops_and_a_second_cuts_it_short() -> None:
    server, stop = _server(delay_s=0.3)
    server.handle_exit(signal.SIGTERM, None)
    assert stop.is_set and not server.should_exit  # refusing, listener still open
    deadline = time.monotonic() + 5
    while not server.should_exit and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.should_exit

    server, stop = _server(delay_s=60)
    server.handle_exit(signal.SIGTERM, None)
    assert not server.should_exit
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit


def test_without_a_delay_the_signal_stops_at_once() -> None:
    server, stop = _server(delay_s=0)
    server.handle_exit(signal.SIGTERM, None)
    assert stop.is_set and server.should_exit
