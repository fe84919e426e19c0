"""A synchronous request whose lease ran out (a slow database, a failover) records its
outcome on the claim as it now stands, except once the claim is handed over in a batch:
the batch's acknowledgement settles it then, and the claim must not go back to the live
queue (or be settled under the operator's file) behind the hand-over's back."""

from __future__ import annotations

import pytest
from synthetic import claim_body

from adapters.base import ClaimOutcome, OperatorUnavailable
from gateway.audit.trail import cli_actor
from gateway.claims import service, transitions
from gateway.handover.service import Handover
from gateway.storage.models import Claim

pytestmark = pytest.mark.anyio


async def exported_claim(app, client, pharmacy, operations) -> str:  # type: ignore[no-untyped-def]
    assert (await client.post("/v1/operators/opera/pause", headers=operations)).status_code == 200
    queued = await client.post("/v1/claims", json=claim_body("LATE1"), headers=pharmacy)
    assert queued.status_code == 202, queued.text
    await Handover.of(app.state.context).export("opera", actor=cli_actor())
    return str(queued.json()["id"])


async def test_a_late_answer_leaves_an_exported_claim_to_its_batch(app, client, pharmacy,
                                                                   operations):
    claim_id = await exported_claim(app, client, pharmacy, operations)
    db = app.state.context.db
    before = (await client.get(f"/v1/claims/{claim_id}", headers=pharmacy)).json()["history"]
    accepted = ClaimOutcome(status="accepted", reference="R1", amc_cents=100, code=None)
    settled = await db.write(lambda session: service._first_answer(
        session, claim_id, 201, lambda c: transitions.settle(session, c, accepted)))
    assert settled.status == "exported"
    unanswered = await service._queue_unanswered(
        app.state.context, app.state.context.operators.get("opera"), claim_id,
        OperatorUnavailable("timed out", ambiguous=True))
    assert unanswered[0].status == "exported"
    stored = await db.read(lambda session: session.get(Claim, claim_id))
    assert stored is not None and stored.status == "exported"
    assert stored.amc_covered_cents is None and stored.lease_owner is None
    after = (await client.get(f"/v1/claims/{claim_id}", headers=pharmacy)).json()["history"]
    assert after == before
