"""The events feed (CONTRACT.md 3.4): outbox order, cursor, long-poll, isolation."""

from __future__ import annotations

import asyncio

import pytest
from simulator_control import set_fault
from synthetic import claim_body
from waiting import eventually, parked_long_polls

from gateway.events import service as events_service

pytestmark = pytest.mark.anyio


async def test_events_follow_each_claim_oldest_first(client, pharmacy, simulators):
    accepted = (await client.post("/v1/claims", json=claim_body("E1"), headers=pharmacy)).json()
    rejected = (await client.post("/v1/claims", json=claim_body("E2", member_number="REJ1"),
                                  headers=pharmacy)).json()
    await set_fault(simulators["opera"], "down")
    queued = (await client.post("/v1/claims", json=claim_body("E3"), headers=pharmacy)).json()
    await client.post(f"/v1/claims/{queued['id']}/cancel", headers=pharmacy)
    page = (await client.get("/v1/events", headers=pharmacy)).json()
    assert [(e["type"], e["claim_id"]) for e in page["events"]] == [
        ("claim.accepted", accepted["id"]), ("claim.rejected", rejected["id"]),
        ("claim.queued", queued["id"]), ("receipt.issued", queued["id"]),
        ("claim.cancelled", queued["id"])]
    assert all(e["id"].startswith("evt_") for e in page["events"])
    empty = (await client.get(f"/v1/events?after={page['next']}", headers=pharmacy)).json()
    assert empty == {"events": [], "next": page["next"]}


async def test_cursor_pages_without_gaps(client, pharmacy):
    for index in range(5):
        await client.post("/v1/claims", json=claim_body(f"C{index}"), headers=pharmacy)
    seen, cursor = [], None
    for _ in range(4):
        query = f"?limit=2&after={cursor}" if cursor else "?limit=2"
        page = (await client.get(f"/v1/events{query}", headers=pharmacy)).json()
        seen += [e["id"] for e in page["events"]]
        cursor = page["next"]
    assert len(seen) == len(set(seen)) == 5


async def test_long_poll_returns_as_soon_as_an_event_arrives(app, client, pharmacy,
                                                             monkeypatch):
    # Neither the wait's end (30 s) nor its re-check against a lost wake-up (put off to
    # 60 s) comes within the 15 s allowed: only the event's wake-up can answer in time.
    monkeypatch.setattr(events_service, "RECHECK_S", 60.0)
    start = (await client.get("/v1/events", headers=pharmacy)).json()["next"]
    parked = parked_long_polls(app)
    waiting = asyncio.create_task(
        client.get(f"/v1/events?after={start}&wait=30", headers=pharmacy))
    await eventually(lambda: len(parked) == 1, what="the long-poll waiting")
    assert not waiting.done()
    await client.post("/v1/claims", json=claim_body("W1"), headers=pharmacy)
    page = (await asyncio.wait_for(waiting, 15)).json()
    assert [e["type"] for e in page["events"]] == ["claim.accepted"]


async def test_another_pharmacy_sees_none_of_it(client, pharmacy, other_pharmacy):
    await client.post("/v1/claims", json=claim_body("I1"), headers=pharmacy)
    assert (await client.get("/v1/events", headers=other_pharmacy)).json()["events"] == []


@pytest.mark.parametrize("query", ["after=zzz", "wait=31", "limit=0"])
async def test_bad_parameters_are_422(client, pharmacy, query):
    response = await client.get(f"/v1/events?{query}", headers=pharmacy)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == query.split("=")[0]
