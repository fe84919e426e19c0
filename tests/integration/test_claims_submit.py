"""POST /v1/claims on the synchronous path, idempotency, and operator failures."""

from __future__ import annotations

import asyncio
from itertools import groupby

import pytest
from instances import instance
from simulator_control import ledger, set_fault
from synthetic import claim_body

from gateway.keys.admin import create_key

pytestmark = pytest.mark.anyio


async def test_accepted_claim_is_201_with_the_operators_amount(client, pharmacy, simulators):
    response = await client.post("/v1/claims", json=claim_body("A1"), headers=pharmacy)
    assert response.status_code == 201, response.text
    claim = response.json()
    assert claim["status"] == "accepted"
    assert claim["operator"] == "opera"
    assert claim["amc_requested_cents"] == 280
    assert claim["amc_covered_cents"] == 280
    assert claim["operator_reference"] == "opera-00000001"
    assert claim["coverage"] == {"decision": "not_needed", "reason": None, "receipt": None}
    assert claim["id"].startswith("clm_")
    assert claim["nir_masked"] == "18507**********"
    assert "Idempotent-Replayed" not in response.headers
    entries = (await ledger(simulators["opera"]))["claims"]
    assert [(e["key"], e["count"]) for e in entries] == [(claim["id"], 1)]


async def test_rejected_claim_is_201_with_the_operators_reason(client, pharmacy):
    body = claim_body("R1", member_number="REJ42")
    response = await client.post("/v1/claims", json=body, headers=pharmacy)
    assert response.status_code == 201
    claim = response.json()
    assert claim["status"] == "rejected"
    assert claim["amc_covered_cents"] is None
    assert claim["rejection"] == {"code": "R02", "label": "Droits fermés ou carte expirée"}


async def test_claims_route_to_the_operator_of_their_insurer(client, pharmacy, simulators):
    response = await client.post("/v1/claims", json=claim_body("S1", insurer_number="901234567"),
                                 headers=pharmacy)
    assert response.json()["operator"] == "santex"
    assert len((await ledger(simulators["santex"]))["claims"]) == 1
    assert (await ledger(simulators["opera"]))["claims"] == []


async def test_unrouted_insurer_is_422_unknown_insurer(client, pharmacy):
    response = await client.post("/v1/claims", json=claim_body("U1", insurer_number="700000001"),
                                 headers=pharmacy)
    assert response.status_code == 422
    problem = response.json()
    assert problem["type"] == "unknown-insurer"
    assert problem["errors"] == [
        {"field": "amc.insurer_number", "message": "not routed to any operator"}
    ]


async def test_same_body_replays_the_first_answer(client, pharmacy, simulators):
    first = await client.post("/v1/claims", json=claim_body("I1"),
                              headers={**pharmacy, "Idempotency-Key": "k-1"})
    again = await client.post("/v1/claims", json=claim_body("I1"),
                              headers={**pharmacy, "Idempotency-Key": "k-1"})
    assert again.status_code == first.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    # Without the key, the same FINESS and invoice number with the same body replays too.
    no_key = await client.post("/v1/claims", json=claim_body("I1"), headers=pharmacy)
    assert no_key.status_code == 201 and no_key.json()["id"] == first.json()["id"]
    assert no_key.headers["Idempotent-Replayed"] == "true"
    assert (await ledger(simulators["opera"]))["claims"][0]["count"] == 1


async def test_same_key_with_another_body_is_422(client, pharmacy):
    await client.post("/v1/claims", json=claim_body("I2"),
                      headers={**pharmacy, "Idempotency-Key": "k-2"})
    response = await client.post("/v1/claims", json=claim_body("I3"),
                                 headers={**pharmacy, "Idempotency-Key": "k-2"})
    assert response.status_code == 422
    assert response.json()["type"] == "idempotency-key-reused"


async def test_same_invoice_with_another_body_is_409_duplicate_invoice(client, pharmacy):
    first = await client.post("/v1/claims", json=claim_body("I4"), headers=pharmacy)
    other = claim_body("I4")
    other["lines"][0]["quantity"] = 2
    other["lines"][0]["base_cents"] = 1600
    response = await client.post("/v1/claims", json=other, headers=pharmacy)
    assert response.status_code == 409
    assert response.json()["type"] == "duplicate-invoice"
    assert response.json()["claim_id"] == first.json()["id"]


async def test_a_claim_in_flight_answers_409_to_its_duplicate(settings, simulators):
    # The operator answers in 300 ms; its timeout is well above that (2 s, not the suite's
    # 0.5 s), so a loaded machine (parallel workers) cannot turn the first answer into a
    # timeout (202) while the duplicate is being read.
    patient = settings.model_copy(update={"operators": [
        op.model_copy(update={"timeout_s": 2.0, "deadline_s": 3.0}) for op in settings.operators]})
    async with instance(patient, simulators) as (_, client):
        _, secret = create_key(patient, role="pharmacy", finess="330001231")
        await _in_flight_duplicates(client, {"Authorization": f"Bearer {secret}"}, simulators)


async def _in_flight_duplicates(client, pharmacy, simulators) -> None:  # type: ignore[no-untyped-def]
    await set_fault(simulators["opera"], "slow", latency_ms=300)
    for attempt in range(3):
        invoice = f"F{attempt}"
        first = asyncio.create_task(client.post("/v1/claims", json=claim_body(invoice),
                                                headers=pharmacy))
        await _until_pending(client, pharmacy, invoice)
        duplicate = await client.post("/v1/claims", json=claim_body(invoice), headers=pharmacy)
        if duplicate.status_code == 201 and first.done():
            # The whole suite's process can stall past the operator's 300 ms (a full
            # garbage collection): the first answer came before the duplicate was read,
            # so this attempt saw a replay, not a claim in flight. Try again.
            assert (await first).status_code == 201
            continue
        assert duplicate.status_code == 409
        assert duplicate.json()["type"] == "in-flight"
        assert (await first).status_code == 201
        return
    raise AssertionError("the first claim was never still in flight when its duplicate came")


async def _until_pending(client, pharmacy, invoice: str) -> None:
    """Wait (bounded) until this claim is stored and in flight, however slow the machine."""
    for _ in range(200):
        listed = await client.get("/v1/claims", params={"status": "pending"}, headers=pharmacy)
        if any(c["invoice_number"] == invoice for c in listed.json()["claims"]):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the first claim never became pending")


async def test_concurrent_duplicates_store_one_claim(client, pharmacy, simulators):
    answers = await asyncio.gather(*(
        client.post("/v1/claims", json=claim_body("C1"), headers=pharmacy) for _ in range(5)
    ))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(201) >= 1 and set(statuses) <= {201, 409}
    ids = {a.json()["id"] for a in answers if a.status_code == 201}
    assert len(ids) == 1
    assert (await ledger(simulators["opera"]))["claims"][0]["count"] == 1


@pytest.mark.parametrize("mode", ["down", "error", "ambiguous"])
async def test_unavailable_operator_is_202_and_the_claim_is_queued(client, pharmacy, simulators,
                                                                   mode):
    await set_fault(simulators["opera"], mode)
    response = await client.post("/v1/claims", json=claim_body("D1"), headers=pharmacy)
    assert response.status_code == 202
    claim = response.json()
    assert claim["status"] == "queued"
    assert claim["coverage"]["decision"] in ("refused", "provisional")
    stored = await client.get(f"/v1/claims/{claim['id']}", headers=pharmacy)
    assert stored.json()["status"] == "queued"
    assert [s for s, _ in groupby(step["status"] for step in stored.json()["history"])] == [
        "pending", "queued"]
    replay = await client.post("/v1/claims", json=claim_body("D1"), headers=pharmacy)
    assert replay.status_code == 202
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == claim["id"]


async def test_hanging_operator_answers_within_the_deadline(client, pharmacy, simulators,
                                                             settings):
    await set_fault(simulators["opera"], "hang")
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.post("/v1/claims", json=claim_body("H1"), headers=pharmacy)
    elapsed = loop.time() - started
    assert response.status_code == 202
    assert elapsed < settings.operators[0].deadline_s + 0.5
    assert response.json()["status"] == "queued"


async def test_dispenser_of_another_pharmacy_is_403_and_not_stored(client, pharmacy):
    response = await client.post("/v1/claims", json=claim_body("X1", finess="690000880"),
                                 headers=pharmacy)
    assert response.status_code == 403
    listed = await client.get("/v1/claims", headers=pharmacy)
    assert listed.json()["claims"] == []


async def test_duplicates_queued_together_store_one_claim(app, client, pharmacy, simulators):
    """With the breaker open, copies stored in one transaction find each other."""
    app.state.context.operators.get("opera").breaker.trip(open_for=60)
    answers = await asyncio.gather(*(
        client.post("/v1/claims", json=claim_body("C2"), headers=pharmacy) for _ in range(5)
    ))
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 4
    listed = await client.get("/v1/claims", headers=pharmacy)
    assert len(listed.json()["claims"]) == 1
