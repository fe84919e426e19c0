"""A cancellation confirmed twice is recorded once.

The request that asked for it and the drains of every process (several instances, or
`gateway serve --workers N`) each send a pending cancellation they read; the operator
answers each alike (cancelling is idempotent there), and whoever confirms after the
first must not write a second `cancelled` step.
"""

from __future__ import annotations

import pytest
from simulator_control import set_fault
from synthetic import claim_body

from gateway.claims.cancel import confirm_cancelled

pytestmark = pytest.mark.anyio


async def test_a_second_confirmation_writes_nothing(app, client, pharmacy, simulators):
    created = await client.post("/v1/claims", json=claim_body("CC1"), headers=pharmacy)
    assert created.status_code == 201, created.text
    claim_id = created.json()["id"]
    await set_fault(simulators["opera"], "down")
    deferred = await client.post(f"/v1/claims/{claim_id}/cancel", headers=pharmacy)
    assert deferred.status_code == 202  # pending: now every drain may pick it up
    await set_fault(simulators["opera"], "ok")
    db = app.state.context.db
    first = await db.write(lambda session: confirm_cancelled(session, claim_id))
    second = await db.write(lambda session: confirm_cancelled(session, claim_id))
    assert first.status == second.status == "cancelled"
    claim = (await client.get(f"/v1/claims/{claim_id}", headers=pharmacy)).json()
    steps = [step["status"] for step in claim["history"]]
    assert steps.count("cancelled") == 1, steps
    events = (await client.get("/v1/events", headers=pharmacy)).json()
    assert len([e for e in events["events"] if e["type"] == "claim.cancelled"]) == 1
