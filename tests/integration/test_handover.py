"""The batch hand-over (docs/handover.md): export, the simulator's acknowledgement,
import, release; every claim settled once; tampered or wrong files refused, nothing
changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from handover_support import acknowledge, give_keys, handover_config
from operator_settings import operator_config
from simulator_control import ledger
from sqlmodel import col, select
from synthetic import claim_body

from gateway.audit.trail import cli_actor
from gateway.handover.service import Handover
from gateway.settings import Settings
from gateway.storage.models import AuditEntry, Claim, ClaimHistory, Event, Receipt

pytestmark = pytest.mark.anyio
ACTOR = cli_actor()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="development", database_url=database_url, data_dir=tmp_path / "data",
        operators=[operator_config("opera", ["80*", "123456789"], **handover_config()),
                   operator_config("santex", ["90*"], provisional="cached_rights")])


async def queue_claims(client, pharmacy, operations, bodies: list[dict[str, Any]]) -> list[str]:
    """Claims queued while opera is paused (nothing is sent), oldest first."""
    assert (await client.post("/v1/operators/opera/pause", headers=operations)).status_code == 200
    ids = []
    for body in bodies:
        response = await client.post("/v1/claims", json=body, headers=pharmacy)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


def handover(app) -> Handover:
    return Handover.of(app.state.context)


async def rows(app, model, *where) -> list[Any]:
    return await app.state.context.db.read(
        lambda s: list(s.exec(select(model).where(*where)).all()))


async def test_export_acknowledge_import_settles_every_claim_once(
        app, client, pharmacy, operations, simulators):
    bodies = [claim_body("HO1"), claim_body("HO2", member_number="REJ001"), claim_body("HO3")]
    ids = await queue_claims(client, pharmacy, operations, bodies)
    batch, batch_file = await handover(app).export("opera", actor=ACTOR)
    assert batch.count == 3 and batch.state == "exported"
    for claim_id in ids:
        got = (await client.get(f"/v1/claims/{claim_id}", headers=pharmacy)).json()
        assert got["status"] == "exported"
        assert got["history"][-1]["detail"] == f"exported in batch {batch.id}"
    give_keys(simulators["opera"], app)
    answer = await acknowledge(simulators["opera"], batch_file)
    assert answer.status_code == 200, answer.text
    done = await handover(app).import_acks("opera", answer.text, actor=ACTOR)
    assert (done.accepted, done.rejected, done.left) == (2, 1, 0)
    statuses = [(await client.get(f"/v1/claims/{i}", headers=pharmacy)).json()["status"]
                for i in ids]
    assert statuses == ["accepted", "rejected", "accepted"]
    book = await ledger(simulators["opera"])
    assert book["received"] == 0 and book["batches"] == 1
    assert sorted(c["key"] for c in book["claims"]) == sorted(ids)
    events = [(e.claim_id, e.type) for e in await rows(app, Event)]
    for claim_id, status in zip(ids, statuses, strict=True):
        assert events.count((claim_id, "claim.exported")) == 1
        assert events.count((claim_id, f"claim.{status}")) == 1
    receipts = {r.claim_id: r.status for r in await rows(app, Receipt)}
    assert receipts == {ids[0]: "honored", ids[1]: "contested", ids[2]: "honored"}
    again = await handover(app).batches("opera")
    assert [(b.id, b.state, b.settled, left) for b, left in again] == [
        (batch.id, "acknowledged", 3, 0)]
