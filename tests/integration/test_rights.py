"""POST /v1/rights: the operator's answer, the cache when it is down, and the rate limit."""

from __future__ import annotations

import pytest
from simulator_control import set_fault
from synthetic import rights_body

pytestmark = pytest.mark.anyio


async def test_rights_come_from_the_operator(client, pharmacy):
    response = await client.post("/v1/rights", json=rights_body(), headers=pharmacy)
    assert response.status_code == 200, response.text
    rights = response.json()
    assert rights["covered"] is True and rights["source"] == "operator"
    assert rights["guarantees"]["PH7"] == 100
    assert rights["valid_to"] == rights_body()["amc"]["valid_to"]


async def test_when_the_operator_is_down_the_cached_answer_is_served(client, pharmacy,
                                                                     simulators):
    fresh = (await client.post("/v1/rights", json=rights_body(), headers=pharmacy)).json()
    await set_fault(simulators["opera"], "down")
    cached = await client.post("/v1/rights", json=rights_body(), headers=pharmacy)
    assert cached.status_code == 200
    assert cached.json()["source"] == "cache"
    assert cached.json()["covered"] is True
    assert cached.json()["guarantees"] == fresh["guarantees"]
    assert cached.json()["as_of"] == fresh["as_of"]


async def test_no_cached_answer_means_unknown(client, pharmacy, simulators):
    await client.post("/v1/rights", json=rights_body(person=0), headers=pharmacy)
    await set_fault(simulators["opera"], "down")
    response = await client.post("/v1/rights", json=rights_body(person=1), headers=pharmacy)
    assert response.json() == {"covered": None, "source": None, "as_of": None,
                               "valid_to": None, "guarantees": {}}


async def test_rights_are_rate_limited_per_key(app, client, pharmacy, other_pharmacy):
    app.state.context.limiter._per_minute["rights"] = 3
    for _ in range(3):
        assert (await client.post("/v1/rights", json=rights_body(),
                                  headers=pharmacy)).status_code == 200
    limited = await client.post("/v1/rights", json=rights_body(), headers=pharmacy)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["type"] == "rate-limited"
    # Another key has its own budget.
    assert (await client.post("/v1/rights", json=rights_body(),
                              headers=other_pharmacy)).status_code == 200


async def test_invalid_rights_request_names_the_field(client, pharmacy):
    body = rights_body()
    body["beneficiary"]["nir"] = "185077511512397"
    del body["date"]
    response = await client.post("/v1/rights", json=body, headers=pharmacy)
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"beneficiary.nir", "date"}
