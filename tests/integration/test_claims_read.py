"""Reading, listing and cancelling claims; authentication and object-level access."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from simulator_control import ledger, set_fault
from synthetic import claim_body

pytestmark = pytest.mark.anyio


async def submit(client, headers, invoice, **kwargs):
    response = await client.post("/v1/claims", json=claim_body(invoice, **kwargs),
                                 headers=headers)
    assert response.status_code in (201, 202), response.text
    return response.json()["id"]


async def test_a_claim_shows_its_history_oldest_first(client, pharmacy):
    claim_id = await submit(client, pharmacy, "G1")
    response = await client.get(f"/v1/claims/{claim_id}", headers=pharmacy)
    assert response.status_code == 200
    history = response.json()["history"]
    assert [step["status"] for step in history] == ["pending", "accepted"]
    assert history[0]["at"] <= history[1]["at"]
    assert history[0]["at"].endswith("Z") or "+" in history[0]["at"]


async def test_list_is_newest_first_with_a_cursor(client, pharmacy):
    ids = [await submit(client, pharmacy, f"L{i}") for i in range(5)]
    first = (await client.get("/v1/claims?limit=2", headers=pharmacy)).json()
    assert [c["id"] for c in first["claims"]] == ids[::-1][:2]
    second = (await client.get(f"/v1/claims?limit=2&cursor={first['next']}",
                               headers=pharmacy)).json()
    assert [c["id"] for c in second["claims"]] == ids[::-1][2:4]
    third = (await client.get(f"/v1/claims?limit=2&cursor={second['next']}",
                              headers=pharmacy)).json()
    assert [c["id"] for c in third["claims"]] == ids[:1]
    assert third["next"] is None


async def test_list_filters_by_status_operator_and_since(client, pharmacy, simulators):
    accepted = await submit(client, pharmacy, "S1")
    rejected = await submit(client, pharmacy, "S2", member_number="REJ1")
    santex = await submit(client, pharmacy, "S3", insurer_number="901234567")
    await set_fault(simulators["opera"], "down")
    queued = await submit(client, pharmacy, "S4")

    async def ids(query):
        response = await client.get(f"/v1/claims?{query}", headers=pharmacy)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["claims"]]

    assert await ids("status=rejected") == [rejected]
    assert await ids("status=queued") == [queued]
    assert await ids("operator=santex") == [santex]
    assert set(await ids("status=accepted")) == {accepted, santex}
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert await ids(f"since={future}") == []


@pytest.mark.parametrize("query", ["status=paid", "limit=0", "limit=1000", "cursor=garbage",
                                   "since=yesterday", "since=2026-11-28T10:00:00"])
async def test_bad_list_parameters_are_422_naming_them(client, pharmacy, query):
    response = await client.get(f"/v1/claims?{query}", headers=pharmacy)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == query.split("=")[0]


async def test_another_pharmacys_claim_is_404(client, pharmacy, other_pharmacy):
    claim_id = await submit(client, pharmacy, "P1")
    assert (await client.get(f"/v1/claims/{claim_id}", headers=other_pharmacy)).status_code == 404
    cancel = await client.post(f"/v1/claims/{claim_id}/cancel", headers=other_pharmacy)
    assert cancel.status_code == 404
    assert (await client.get("/v1/claims", headers=other_pharmacy)).json()["claims"] == []
    assert (await client.get("/v1/claims/clm_nope", headers=pharmacy)).status_code == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic dXNlcjpwYXNz"},
                                     {"Authorization": "Bearer key_0000000000000000.x"}])
async def test_missing_or_bad_key_is_401(client, headers):
    for method, url in [("GET", "/v1/claims"), ("POST", "/v1/claims"),
                        ("GET", "/v1/claims/clm_x"), ("POST", "/v1/rights")]:
        response = await client.request(method, url, headers=headers, json={})
        assert response.status_code == 401, (method, url)
        assert response.json()["type"] == "unauthorized"


async def test_a_revoked_key_stops_working_at_once(client, settings, pharmacy):
    from gateway.keys.admin import revoke_key

    assert (await client.get("/v1/claims", headers=pharmacy)).status_code == 200
    key_id = pharmacy["Authorization"].removeprefix("Bearer ").split(".")[0]
    assert revoke_key(settings, key_id)
    assert (await client.get("/v1/claims", headers=pharmacy)).status_code == 401


async def test_operations_key_may_not_use_pharmacy_endpoints(client, operations):
    assert (await client.get("/v1/claims", headers=operations)).status_code == 403
    response = await client.post("/v1/claims", json=claim_body("O1"), headers=operations)
    assert response.status_code == 403
    assert response.json()["type"] == "forbidden"


async def test_cancel_a_queued_claim_never_sends_it(client, pharmacy, simulators):
    await set_fault(simulators["opera"], "down")
    claim_id = await submit(client, pharmacy, "K1")
    response = await client.post(f"/v1/claims/{claim_id}/cancel", headers=pharmacy)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert (await ledger(simulators["opera"]))["claims"] == []


async def test_cancel_an_accepted_claim_goes_through_the_operator(client, pharmacy, simulators):
    claim_id = await submit(client, pharmacy, "K2")
    response = await client.post(f"/v1/claims/{claim_id}/cancel", headers=pharmacy)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancellation_pending"] is False
    assert (await ledger(simulators["opera"]))["claims"][0]["cancelled"] is True
    again = await client.post(f"/v1/claims/{claim_id}/cancel", headers=pharmacy)
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_cancel_while_the_operator_is_down_stays_pending(client, pharmacy, simulators):
    claim_id = await submit(client, pharmacy, "K3")
    await set_fault(simulators["opera"], "down")
    response = await client.post(f"/v1/claims/{claim_id}/cancel", headers=pharmacy)
    assert response.status_code == 202
    assert response.json()["status"] == "accepted"
    assert response.json()["cancellation_pending"] is True


async def test_a_rejected_claim_cannot_be_cancelled(client, pharmacy):
    claim_id = await submit(client, pharmacy, "K4", member_number="REJ9")
    response = await client.post(f"/v1/claims/{claim_id}/cancel", headers=pharmacy)
    assert response.status_code == 409
    assert response.json()["type"] == "not-cancellable"


async def test_a_revoked_key_stores_no_claim_even_when_cached(client, settings, pharmacy,
                                                               simulators):
    """Claim submission reads keys from a cache, and confirms them when storing."""
    from gateway.keys.admin import revoke_key

    assert (await client.post("/v1/claims", json=claim_body("RV1"),
                              headers=pharmacy)).status_code == 201
    key_id = pharmacy["Authorization"].removeprefix("Bearer ").split(".")[0]
    assert revoke_key(settings, key_id)
    refused = await client.post("/v1/claims", json=claim_body("RV2"), headers=pharmacy)
    assert refused.status_code == 401
    assert refused.json()["type"] == "unauthorized"
    assert (await ledger(simulators["opera"]))["received"] == 1
    again = await client.post("/v1/claims", json=claim_body("RV3"), headers=pharmacy)
    assert again.status_code == 401
