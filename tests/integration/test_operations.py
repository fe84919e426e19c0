"""Operations API (CONTRACT.md 3.6): board, pause and resume, replay, queue, audit."""

from __future__ import annotations

import json

import pytest
from simulator_control import set_fault
from sqlmodel import select
from synthetic import PEOPLE, claim_body

from gateway.keys.admin import create_key
from gateway.storage.db import Database
from gateway.storage.models import AuditEntry

pytestmark = pytest.mark.anyio


def audit_entries(settings) -> list[AuditEntry]:
    database = Database(settings.database_url)
    try:
        return database.read_now(lambda s: list(s.exec(select(AuditEntry)).all()))
    finally:
        database.engine.dispose()


async def queue_claims(client, pharmacy, simulators, count: int) -> list[str]:
    await set_fault(simulators["opera"], "down")
    ids = []
    for index in range(count):
        response = await client.post("/v1/claims", json=claim_body(f"Q{index}"),
                                     headers=pharmacy)
        assert response.status_code == 202
        ids.append(response.json()["id"])
    return ids


async def test_the_board_shows_each_operator_to_any_role(client, pharmacy, operations,
                                                         simulators):
    await queue_claims(client, pharmacy, simulators, 2)
    states = (await client.get("/v1/operators", headers=pharmacy)).json()
    assert {o["name"]: set(o) for o in states} == {
        name: {"name", "state", "state_since", "paused"} for name in ("opera", "santex")}
    for headers in (operations,):
        response = await client.get("/v1/operators", headers=headers)
        assert response.status_code == 200
        board = {o["name"]: o for o in response.json()}
        assert set(board) == {"opera", "santex"}
        assert board["opera"]["queued"] == 2 and board["opera"]["state"] == "closed"
        assert board["santex"]["queued"] == 0 and board["opera"]["paused"] is False
        assert board["opera"]["last_failure_at"] is not None


async def test_pause_queues_new_claims_without_sending_and_resume(client, pharmacy,
                                                                   operations, simulators,
                                                                   settings):
    from simulator_control import ledger

    paused = await client.post("/v1/operators/opera/pause", json={"reason": "maintenance"},
                               headers=operations)
    assert paused.status_code == 200
    assert paused.json()["paused"] is True and paused.json()["pause_reason"] == "maintenance"
    response = await client.post("/v1/claims", json=claim_body("PZ1"), headers=pharmacy)
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert (await ledger(simulators["opera"]))["received"] == 0
    resumed = await client.post("/v1/operators/opera/resume", headers=operations)
    assert resumed.json()["paused"] is False
    actions = [(e.action, e.object_id, e.actor) for e in audit_entries(settings)]
    key_id = operations["Authorization"].split()[1].split(".")[0]
    assert ("operator.pause", "opera", key_id) in actions
    assert ("operator.resume", "opera", key_id) in actions


async def test_the_pause_survives_a_restart(client, operations, settings, simulators):
    from asgi_lifespan import LifespanManager

    from gateway.main import create_app

    await client.post("/v1/operators/opera/pause", headers=operations)
    again = create_app(settings, configure_logs=False, run_workers=False)
    async with LifespanManager(again):
        import httpx
        async with httpx.AsyncClient(transport=httpx.ASGITransport(again),
                                     base_url="http://g") as http:
            board = (await http.get("/v1/operators", headers=operations)).json()
    assert {o["name"]: o["paused"] for o in board} == {"opera": True, "santex": False}


async def test_replay_failed_claims_dry_run_then_for_real(client, pharmacy, operations,
                                                          simulators, settings):
    ids = await queue_claims(client, pharmacy, simulators, 3)
    database = Database(settings.database_url)

    def fail_all(session):
        from gateway.claims import repository
        for claim_id in ids[:2]:
            claim = repository.load(session, claim_id)
            claim.attempts = 12
            repository.record(session, claim, "failed", "gave up")

    database.write_now(fail_all)
    database.engine.dispose()
    dry = await client.post("/v1/operators/opera/replay",
                            json={"status": "failed", "dry_run": True}, headers=operations)
    assert dry.json() == {"replay_id": None, "count": 2, "dry_run": True}
    real = await client.post("/v1/operators/opera/replay", json={"status": "failed"},
                             headers=operations)
    assert real.status_code == 200 and real.json()["count"] == 2
    replay_id = real.json()["replay_id"]
    again = await client.post("/v1/operators/opera/replay", json={"status": "queued"},
                              headers=operations)
    assert again.status_code == 409 and again.json()["type"] == "replay-running"
    progress = (await client.get("/v1/operators/opera/replay", headers=operations)).json()
    assert progress["replay_id"] == replay_id and progress["remaining"] == 2
    assert progress["running"] is True
    queue = (await client.get("/v1/operators/opera/queue", headers=operations)).json()
    assert {c["id"]: (c["status"], c["attempts"]) for c in queue["claims"]} == {
        ids[0]: ("queued", 0), ids[1]: ("queued", 0), ids[2]: ("queued", 1)}
    replays = [e for e in audit_entries(settings) if e.action == "operator.replay"]
    assert [(e.outcome, json.loads(e.details_json)["count"]) for e in replays] == [
        ("dry_run", 2), ("ok", 2)]


async def test_replay_needs_a_filter(client, operations):
    response = await client.post("/v1/operators/opera/replay", json={}, headers=operations)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "status"


async def test_the_queue_listing_carries_no_personal_data(client, pharmacy, operations,
                                                          simulators):
    await queue_claims(client, pharmacy, simulators, 1)
    response = await client.get("/v1/operators/opera/queue", headers=operations)
    assert response.status_code == 200
    text = response.text
    for field in ("nir", "birth_date", "last_name", "first_name"):
        assert PEOPLE[0][field] not in text
    assert set(response.json()["claims"][0]) == {"id", "invoice_number", "status", "attempts",
                                                 "last_error", "queued_at"}


async def test_roles_and_scopes(client, pharmacy, settings):
    _, scoped = create_key(settings, role="operations", operators=["santex"])
    scoped_headers = {"Authorization": f"Bearer {scoped}"}
    assert (await client.post("/v1/operators/opera/pause",
                              headers=scoped_headers)).status_code == 403
    assert (await client.post("/v1/operators/santex/pause",
                              headers=scoped_headers)).status_code == 200
    assert (await client.post("/v1/operators/opera/pause", headers=pharmacy)).status_code == 403
    assert (await client.post("/v1/operators/nope/pause",
                              headers=scoped_headers)).status_code == 404
    assert (await client.get("/v1/operators/opera/queue")).status_code == 401
