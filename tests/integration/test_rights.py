"""POST /v1/rights: the operator's answer, this pharmacy's cache when it is down, and the
rate limit."""

from __future__ import annotations

import pytest
from simulator_control import set_fault
from sqlalchemy import text
from synthetic import OTHER_FINESS, rights_body

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


UNKNOWN = {"covered": None, "source": None, "as_of": None, "valid_to": None, "guarantees": {}}


async def test_another_pharmacy_never_gets_a_cached_answer(client, pharmacy, other_pharmacy,
                                                           simulators):
    """Issue 12: pharmacy B got A's cached answer (guarantees included) during an outage."""
    fresh = await client.post("/v1/rights", json=rights_body(person=0), headers=pharmacy)
    assert fresh.json()["source"] == "operator"
    await set_fault(simulators["opera"], "down")
    # B never looked this person up: the same answer as for someone nobody looked up
    looked_up_by_a = await client.post("/v1/rights", json=rights_body(person=0),
                                       headers=other_pharmacy)
    assert looked_up_by_a.status_code == 200 and looked_up_by_a.json() == UNKNOWN
    nobody = await client.post("/v1/rights", json=rights_body(person=2), headers=other_pharmacy)
    assert nobody.json() == UNKNOWN
    mine = await client.post("/v1/rights", json=rights_body(person=0), headers=pharmacy)
    assert mine.json()["source"] == "cache" and mine.json()["guarantees"] == \
        fresh.json()["guarantees"]


async def test_a_cached_answer_moved_to_another_pharmacy_opens_nothing(
        app, client, pharmacy, other_pharmacy, simulators):
    await client.post("/v1/rights", json=rights_body(person=0), headers=pharmacy)
    await set_fault(simulators["opera"], "down")
    await app.state.context.db.write(lambda s: s.execute(text(
        "UPDATE rights_cache SET finess = :f"), {"f": OTHER_FINESS}))
    moved = await client.post("/v1/rights", json=rights_body(person=0), headers=other_pharmacy)
    assert moved.json() == UNKNOWN  # the entry's encryption is bound to A's FINESS
    assert (await client.post("/v1/rights", json=rights_body(person=0),
                              headers=pharmacy)).json() == UNKNOWN


async def test_a_birth_date_the_nir_contradicts_is_422(client, pharmacy):
    body = rights_body()
    body["beneficiary"]["birth_date"] = "1985-08-14"  # the NIR says July 1985
    response = await client.post("/v1/rights", json=body, headers=pharmacy)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["beneficiary.birth_date"]
