"""Simulator behaviour that the adapter cannot reach: its control endpoints and edge cases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from adapter_samples import NIR, claim_body

from adapters.simulator import create_simulator

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _client(name: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_simulator(name))
    return httpx.AsyncClient(transport=transport, base_url=f"http://{name}")


@pytest.fixture
async def sim(anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    async with _client("sim") as client:
        yield client


async def test_two_simulators_are_independent(anyio_backend: str) -> None:
    async with _client("a") as a, _client("b") as b:
        await a.post("/_faults", json={"mode": "down"})
        first = await a.post("/claims", json=claim_body(), headers={"Idempotency-Key": "k"})
        second = await b.post("/claims", json=claim_body(), headers={"Idempotency-Key": "k"})
        assert (first.status_code, second.status_code) == (503, 200)
        assert second.json()["reference"] == "b-00000001"
        assert (await a.get("/_ledger")).json() == {
            "name": "a", "claims": [], "received": 0, "rights": 0, "batches": 0,
        }
        assert (await b.get("/_ledger")).json()["received"] == 1


async def test_missing_idempotency_key_is_400(sim: httpx.AsyncClient) -> None:
    response = await sim.post("/claims", json=claim_body())
    assert (response.status_code, response.json()) == (400, {"detail": "missing Idempotency-Key"})
    assert (await sim.get("/_ledger")).json()["received"] == 0


async def test_unreadable_claim_is_422_without_echo(sim: httpx.AsyncClient) -> None:
    body = claim_body()
    body["service_date"] = "28/11/2026"
    response = await sim.post("/claims", json=body, headers={"Idempotency-Key": "k"})
    assert response.status_code == 422
    assert NIR not in response.text


async def test_faults_round_trip_and_control_endpoints_ignore_them(
    sim: httpx.AsyncClient,
) -> None:
    setting = {"mode": "down", "latency_ms": 0, "error_rate": 0.0}
    assert (await sim.post("/_faults", json=setting)).json() == setting
    assert (await sim.get("/_faults")).json() == setting
    down = await sim.get("/health")
    assert (down.status_code, down.headers["Retry-After"]) == (503, "1")
    assert (await sim.get("/_ledger")).status_code == 200
    assert (await sim.post("/_ledger/reset")).status_code == 200


async def test_bad_fault_setting_is_refused(sim: httpx.AsyncClient) -> None:
    assert (await sim.post("/_faults", json={"mode": "broken"})).status_code == 422
    assert (await sim.post("/_faults", json={"error_rate": 2})).status_code == 422
    assert (await sim.get("/_faults")).json()["mode"] == "ok"


async def test_reset_clears_the_ledger_but_never_reuses_references(
    sim: httpx.AsyncClient,
) -> None:
    first = await sim.post("/claims", json=claim_body(), headers={"Idempotency-Key": "k"})
    await sim.post("/_ledger/reset")
    again = await sim.post("/claims", json=claim_body(), headers={"Idempotency-Key": "k"})
    references = (first.json()["reference"], again.json()["reference"])
    assert references == ("sim-00000001", "sim-00000002")
    assert (await sim.get("/_ledger")).json()["received"] == 1


@pytest.mark.parametrize(("mode", "recorded"), [("hold", 1), ("hang", 0)])
async def test_hold_records_the_claim_then_keeps_its_answer_unlike_hang(
    sim: httpx.AsyncClient, mode: str, recorded: int,
) -> None:
    """`hold` is an operator that has the claim while its sender never hears so: a lookup
    finds it. `hang` stops before processing: a sender gone leaves nothing behind."""
    await sim.post("/_faults", json={"mode": mode})
    with anyio.move_on_after(0.3) as waiting:  # the sender gives up, as a killed one would
        await sim.post("/claims", json=claim_body(), headers={"Idempotency-Key": "k"})
    assert waiting.cancelled_caught, "answered: nothing was held"
    ledger = (await sim.get("/_ledger")).json()
    assert (ledger["received"], len(ledger["claims"])) == (recorded, recorded)
    await sim.post("/_faults", json={"mode": "ok"})  # under `hang` a lookup would hang too
    lookup = await sim.get("/claims/k")
    if recorded:
        assert (lookup.status_code, lookup.json()["reference"]) == (200, "sim-00000001")
    else:
        assert lookup.status_code == 404
