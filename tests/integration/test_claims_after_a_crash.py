"""A retry always finds its claim, even when the request that stored it died.

The dead request is made real where a process can be: a claim stored and then left
`pending` under a lease nobody will honour (what a SIGKILL leaves: see
tests/e2e/test_e2e_kill_points.py for the real kills). Its retry is 409 only while the first
request could still answer; after that the claim answers as it stands, and a claim still
`pending` goes back to the queue, looked up at the operator before anything is resent.
The drain's sweep and a stopping process do the same without any retry.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from simulator_control import ledger, set_fault
from sqlalchemy import delete, update
from sqlmodel import col
from synthetic import claim_body
from test_drain import gateway, wait_until

from gateway.claims.service import LEASE_GRACE_S
from gateway.main import requeue_held_claims
from gateway.queue.drain import DrainWorker
from gateway.storage.db import Database
from gateway.storage.models import Claim, Receipt, utcnow

pytestmark = pytest.mark.anyio
DEADLINE_S = 0.4  # test_drain.FAST


async def left_pending_by_a_dead_request(app, claim_id: str, *, age_s: float,
                                         owner: str = "gone-1234-abcdef", **values) -> None:
    """Make the row what a request killed after storing it leaves behind: `pending`, no
    first answer, under a lease of the dead process that ran out `age_s` after storing."""
    created = utcnow() - timedelta(seconds=age_s)

    def rewind(session):
        # a request that died after storing never got as far as a receipt
        session.execute(delete(Receipt).where(col(Receipt.claim_id) == claim_id))
        session.execute(update(Claim).where(col(Claim.id) == claim_id).values(
            status="pending", first_http_status=None, lease_owner=owner,
            lease_until=created + timedelta(seconds=DEADLINE_S + LEASE_GRACE_S),
            created_at=created, maybe_sent=False, coverage_decision="not_needed",
            coverage_reason=None, **values))

    await app.state.context.db.write(rewind)


async def row(app, claim_id: str) -> Claim:
    return await app.state.context.db.read(lambda session: session.get(Claim, claim_id))


async def stored_while_down(http, simulators, invoice: str, key: str) -> str:
    """A claim the operator never received (it was down): the first request's part done."""
    await set_fault(simulators["opera"], "down")
    response = await http.post("/v1/claims", json=claim_body(invoice),
                               headers={"Idempotency-Key": key})
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def test_a_retry_within_the_first_requests_deadline_is_409_in_flight(settings, simulators):
    async with gateway(settings, simulators, breaker_reset_s=60, breaker_reset_max_s=60) as (
            app, http):
        claim_id = await stored_while_down(http, simulators, "K1", "key-k1")
        await left_pending_by_a_dead_request(app, claim_id, age_s=0.0)
        retry = await http.post("/v1/claims", json=claim_body("K1"),
                                headers={"Idempotency-Key": "key-k1"})
        assert retry.status_code == 409
        assert retry.json()["type"] == "in-flight"
        assert int(retry.headers["Retry-After"]) >= 1
        assert (await row(app, claim_id)).status == "pending"  # untouched


@pytest.mark.parametrize("retry_with", ["same key", "same invoice, no key"])
async def test_after_the_deadline_a_retry_queues_the_orphan_and_the_drain_looks_it_up_first(
        settings, simulators, retry_with):
    async with gateway(settings, simulators, breaker_reset_s=60, breaker_reset_max_s=60) as (
            app, http):
        claim_id = await stored_while_down(http, simulators, "K2", "key-k2")
        await left_pending_by_a_dead_request(app, claim_id, age_s=30)
        headers = {"Idempotency-Key": "key-k2"} if retry_with == "same key" else {}

        retry = await http.post("/v1/claims", json=claim_body("K2"), headers=headers)
        assert retry.status_code == 202, retry.text
        assert retry.headers["Idempotent-Replayed"] == "true"
        claim = retry.json()
        assert (claim["id"], claim["status"]) == (claim_id, "queued")
        assert claim["coverage"]["decision"] == "provisional"  # decided like any queued claim
        stored = await row(app, claim_id)
        assert stored.maybe_sent and stored.lease_owner is None

    # a new process (the restart), the operator back: the drain asks before sending
    async with gateway(settings, simulators) as (app, http):
        await set_fault(simulators["opera"], "ok")
        assert await wait_until(
            lambda: _status_is(http, claim_id, "accepted"), timeout=10)
        entries = (await ledger(simulators["opera"]))["claims"]
        assert [(e["key"], e["count"]) for e in entries] == [(claim_id, 1)]  # 404, then sent
        again = await http.post("/v1/claims", json=claim_body("K2"), headers=headers)
        assert (again.status_code, again.json()["status"]) == (201, "accepted")
        assert again.headers["Idempotent-Replayed"] == "true"


async def test_an_orphan_the_operator_already_has_is_never_sent_twice(settings, simulators):
    async with gateway(settings, simulators, breaker_reset_s=60, breaker_reset_max_s=60) as (
            app, http):
        await set_fault(simulators["opera"], "ambiguous")  # recorded, answer lost
        first = await http.post("/v1/claims", json=claim_body("K3"),
                                headers={"Idempotency-Key": "key-k3"})
        claim_id = first.json()["id"]
        await left_pending_by_a_dead_request(app, claim_id, age_s=30)
        await set_fault(simulators["opera"], "down")
        retry = await http.post("/v1/claims", json=claim_body("K3"),
                                headers={"Idempotency-Key": "key-k3"})
        assert (retry.status_code, retry.json()["status"]) == (202, "queued")
    async with gateway(settings, simulators) as (app, http):
        await set_fault(simulators["opera"], "ok")
        assert await wait_until(lambda: _status_is(http, claim_id, "accepted"), timeout=10)
        entries = (await ledger(simulators["opera"]))["claims"]
        assert [(e["key"], e["count"]) for e in entries] == [(claim_id, 1)]  # looked up only
        assert entries[0]["lookups"] == 1


async def test_an_orphan_the_drain_settled_answers_201_with_the_operators_answer(
        settings, simulators):
    async with gateway(settings, simulators) as (app, http):
        await set_fault(simulators["opera"], "ok")
        first = await http.post("/v1/claims", json=claim_body("K4"),
                                headers={"Idempotency-Key": "key-k4"})
        claim_id = first.json()["id"]
        # settled by the drain after its first request died: no first answer was recorded
        await app.state.context.db.write(lambda s: s.execute(
            update(Claim).where(col(Claim.id) == claim_id).values(
                first_http_status=None, created_at=utcnow() - timedelta(seconds=30))))
        retry = await http.post("/v1/claims", json=claim_body("K4"),
                                headers={"Idempotency-Key": "key-k4"})
        assert (retry.status_code, retry.json()["status"]) == (201, "accepted")
        assert retry.headers["Idempotent-Replayed"] == "true"


async def test_the_drain_sweeps_orphans_even_while_the_breaker_is_open(settings, simulators):
    async with gateway(settings, simulators, breaker_reset_s=60, breaker_reset_max_s=60) as (
            app, http):
        claim_id = await stored_while_down(http, simulators, "K5", "key-k5")
        await left_pending_by_a_dead_request(app, claim_id, age_s=30)
        ctx = app.state.context
        operator = ctx.operators.get("opera")
        operator.breaker.trip()
        assert await DrainWorker(ctx, operator).sweep_abandoned(force=True) == 1
        stored = await row(app, claim_id)
        assert (stored.status, stored.maybe_sent) == ("queued", True)
        assert stored.coverage_decision == "provisional"
        history = (await http.get(f"/v1/claims/{claim_id}")).json()["history"]
        assert any("looked up first" in step["detail"] for step in history[-2:])
        # a live lease is left alone
        await left_pending_by_a_dead_request(app, claim_id, age_s=0.0)
        assert await DrainWorker(ctx, operator).sweep_abandoned(force=True) == 0


# Without the gateway's own drain in the two tests below: its breaker still closed after
# one failure, the drain could lease the claim before it is made pending under this
# instance's name, and then give it back untouched (not looked up first) itself.


async def test_a_stopping_process_requeues_what_it_holds_and_nothing_else(settings, simulators):
    async with gateway(settings, simulators, workers=False, breaker_reset_s=60,
                       breaker_reset_max_s=60) as (app, http):
        ctx = app.state.context
        mine = await stored_while_down(http, simulators, "K6", "key-k6")
        theirs = await stored_while_down(http, simulators, "K7", "key-k7")
        await left_pending_by_a_dead_request(app, mine, age_s=0.0, owner=ctx.instance_id)
        await left_pending_by_a_dead_request(app, theirs, age_s=0.0, owner="other-instance")
        await requeue_held_claims(ctx)
        assert ((await row(app, mine)).status, (await row(app, mine)).maybe_sent) == (
            "queued", True)
        assert (await row(app, theirs)).status == "pending"  # another live instance's


async def test_the_lifespan_requeues_held_claims_when_it_stops(settings, simulators):
    async with gateway(settings, simulators, workers=False, breaker_reset_s=60,
                       breaker_reset_max_s=60) as (app, http):
        claim_id = await stored_while_down(http, simulators, "K8", "key-k8")
        await left_pending_by_a_dead_request(app, claim_id, age_s=0.0,
                                             owner=app.state.context.instance_id)
    # read as the stopped gateway left it: a restarted one's drain would lease it at once
    database = Database(settings.database_url)
    try:
        stored = database.read_now(lambda session: session.get(Claim, claim_id))
    finally:
        database.engine.dispose()
    assert (stored.status, stored.maybe_sent) == ("queued", True)


async def _status_is(http, claim_id: str, status: str) -> bool:
    return (await http.get(f"/v1/claims/{claim_id}")).json()["status"] == status
