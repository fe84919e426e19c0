"""`GET /v1/operators` by role: pharmacies the state only, scoped operations keys their own
operators, admins and unscoped operations keys every operator in full."""

from __future__ import annotations

import pytest
from simulator_control import set_fault
from synthetic import claim_body

from gateway.keys.admin import create_key

pytestmark = pytest.mark.anyio
REASON = "bascule vers le site de secours"
STATE_ONLY = {"name", "state", "state_since", "paused"}
DETAIL = {"paused_by", "pause_reason", "queued", "pending", "failed", "last_failure_at"}


def key(settings, **kwargs) -> dict[str, str]:
    _, secret = create_key(settings, **kwargs)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def paused_with_a_queue(client, pharmacy, operations, simulators) -> str:
    """opera: one claim queued, then paused with a reason; returns the pausing key's id."""
    await set_fault(simulators["opera"], "down")
    queued = await client.post("/v1/claims", json=claim_body("VIS1"), headers=pharmacy)
    assert queued.status_code == 202
    paused = await client.post("/v1/operators/opera/pause", json={"reason": REASON},
                               headers=operations)
    assert paused.status_code == 200 and paused.json()["pause_reason"] == REASON
    return operations["Authorization"].split()[1].split(".")[0]


async def board(client, headers) -> dict[str, dict[str, object]]:
    response = await client.get("/v1/operators", headers=headers)
    assert response.status_code == 200
    return {row["name"]: row for row in response.json()}


async def test_a_pharmacy_sees_each_operator_state_and_nothing_else(
        client, pharmacy, paused_with_a_queue):
    response = await client.get("/v1/operators", headers=pharmacy)
    rows = {row["name"]: row for row in response.json()}
    assert set(rows) == {"opera", "santex"}
    assert all(set(row) == STATE_ONLY for row in rows.values())
    assert rows["opera"]["paused"] is True and rows["santex"]["paused"] is False
    assert REASON not in response.text and paused_with_a_queue not in response.text


async def test_an_operations_key_scoped_to_one_operator_sees_only_it(
        client, settings, paused_with_a_queue):
    rows = await board(client, key(settings, role="operations", operators=["opera"]))
    assert set(rows) == {"opera"}
    assert DETAIL <= set(rows["opera"])
    assert rows["opera"]["pause_reason"] == REASON and rows["opera"]["queued"] == 1
    assert rows["opera"]["paused_by"] == paused_with_a_queue
    elsewhere = await board(client, key(settings, role="operations", operators=["santex"]))
    assert set(elsewhere) == {"santex"} and elsewhere["santex"]["pause_reason"] is None


async def test_admins_and_unscoped_operations_see_every_operator_in_full(
        client, settings, operations, paused_with_a_queue):
    for headers in (operations, key(settings, role="admin")):
        rows = await board(client, headers)
        assert set(rows) == {"opera", "santex"}
        assert all(DETAIL <= set(row) for row in rows.values())
        assert rows["opera"]["pause_reason"] == REASON and rows["opera"]["queued"] == 1


async def test_the_openapi_document_names_both_shapes(client):
    spec = (await client.get("/openapi.json")).json()
    schema = spec["paths"]["/v1/operators"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    refs = {option["$ref"].rsplit("/", 1)[1] for option in schema["items"]["anyOf"]}
    assert refs == {"OperatorPublic", "OperatorState"}
    assert set(spec["components"]["schemas"]["OperatorState"]["properties"]) == STATE_ONLY
