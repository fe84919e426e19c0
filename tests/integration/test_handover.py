"""The batch hand-over (docs/handover.md): export, the simulator's acknowledgement,
import, release; every claim settled once; tampered or wrong files refused, nothing
changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from handover_support import acknowledge, give_keys, handover_config
from operator_settings import operator_config
from simulator_control import ledger
from sqlmodel import col, select
from synthetic import claim_body
from waiting import eventually

from gateway.audit.trail import cli_actor
from gateway.handover import repository as handover_repository
from gateway.handover.service import Handover
from gateway.settings import Settings
from gateway.storage.models import AuditEntry, Claim, ClaimHistory, Event, Receipt

pytestmark = pytest.mark.anyio
ACTOR = cli_actor()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="development", database_url=database_url, data_dir=tmp_path / "data",
        # the drain at full pace at once, 10 claims a lease a second: the race below has it
        # lease and send while batches are exported
        operators=[operator_config("opera", ["80*", "123456789"], drain_per_s=10,
                                   drain_ramp_s=0, **handover_config()),
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
    held = await client.post(f"/v1/claims/{ids[0]}/cancel", headers=pharmacy)
    assert held.status_code == 409  # in the operator's hands: settled by its answer first
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


def queue_directly(app, count: int, tag: str) -> list[str]:
    """`count` claims queued for opera with the gateway's own claim construction, as the
    API's queued path writes them (bench/drain.py's fill), without a request each."""
    from types import SimpleNamespace

    from gateway.claims import service, transitions
    from gateway.claims.schemas import ClaimCreate

    ctx = app.state.context
    operator = SimpleNamespace(name="opera")

    def queue(session) -> list[str]:
        ids = []
        for n in range(count):
            claim_in = ClaimCreate.model_validate(claim_body(f"{tag}{n}"))
            body = claim_in.model_dump(mode="json")
            claim = service._new_claim(
                ctx, claim_in, body, ctx.cipher.index("claim-request", f"{tag}{n}"), None,
                operator, ctx.cipher.index(*claim_in.beneficiary.index_parts))
            claim.first_http_status = 202
            transitions.enqueue(session, claim, "received; operator paused: queued")
            ids.append(claim.id)
        return ids

    return ctx.db.write_now(queue)


async def test_a_batch_far_above_joserfcs_default_sizes_round_trips(
        app, client, pharmacy, operations, simulators):
    """300 claims: a batch file of some 360 KB (joserfc refused a JWE above 67.7 KB as
    "altered") and an acknowledgement of some 55 KB, imported through the API."""
    assert (await client.post("/v1/operators/opera/pause", headers=operations)).status_code == 200
    ids = queue_directly(app, 300, "BIG")
    response = await client.post("/v1/operators/opera/exports", headers=operations)
    assert response.status_code == 201, response.text
    assert len(response.text) > 300_000
    give_keys(simulators["opera"], app)
    answer = await acknowledge(simulators["opera"], response.text)
    assert answer.status_code == 200, answer.text
    imported = await client.post("/v1/operators/opera/acks", content=answer.text,
                                 headers={**operations, "Content-Type": "application/jose"})
    assert imported.status_code == 200, imported.text
    assert imported.json()["accepted"] == 300
    claims = await rows(app, Claim, col(Claim.id).in_(ids))
    assert {c.status for c in claims} == {"accepted"}


async def test_an_export_stops_before_the_largest_file_and_leaves_the_rest_queued(
        app, client, pharmacy, operations, monkeypatch):
    from adapters.batch_files import BatchClaim, line_bytes
    from gateway.handover import service

    ids = await queue_claims(client, pharmacy, operations,
                             [claim_body(f"CAP{n}") for n in range(3)])
    line = line_bytes(BatchClaim(ids[0], {**claim_body("CAP0"), "claim_id": ids[0]}))
    monkeypatch.setattr(service, "MAX_BATCH_BYTES", service._HEADER_BYTES + 2 * line + 10)
    batch, _ = await handover(app).export("opera", actor=ACTOR)
    assert batch.count == 2
    claims = {c.id: c.status for c in await rows(app, Claim)}
    assert [claims[i] for i in ids] == ["exported", "exported", "queued"]


async def test_files_are_built_and_sealed_off_the_event_loop(
        app, client, pharmacy, operations, monkeypatch):
    """Sealing (and for a file made again, decrypting every claim) takes seconds for the
    largest batches: it never runs on the event loop's thread."""
    import threading

    from gateway.handover import service

    sealed_on, decrypted_on = [], []
    seal, decrypt = service.seal_batch, service.wire_claim

    def recording_seal(*args, **kwargs):
        sealed_on.append(threading.get_ident())
        return seal(*args, **kwargs)

    def recording_wire_claim(*args, **kwargs):
        decrypted_on.append(threading.get_ident())
        return decrypt(*args, **kwargs)

    monkeypatch.setattr(service, "seal_batch", recording_seal)
    monkeypatch.setattr(service, "wire_claim", recording_wire_claim)
    await queue_claims(client, pharmacy, operations, [claim_body("TH1"), claim_body("TH2")])
    batch, first = await handover(app).export("opera", actor=ACTOR)
    decrypted_on.clear()
    again = await handover(app).file_of("opera", batch.id, actor=ACTOR)
    assert first != again  # sealed again: a fresh content key
    loop = threading.get_ident()
    assert len(sealed_on) == 2 and loop not in sealed_on
    assert len(decrypted_on) == 2 and loop not in decrypted_on


async def test_a_claim_loaded_earlier_in_the_write_group_reads_exported_after_the_export(
        app, client, pharmacy, operations):
    """The works of a write group share one session: a claim an earlier work loaded (a
    cancel, a replayed submission) must not still say `queued` to a later one once the
    export's UPDATE took it, or a cancel would cancel a claim the operator holds."""
    ids = await queue_claims(client, pharmacy, operations, [claim_body("ST1")])
    exporting = handover(app)

    def group(session) -> tuple[str, str]:
        earlier = session.get(Claim, ids[0])  # an earlier work of the group
        before = earlier.status
        exporting._export(session, "opera", ACTOR, 10)
        return before, session.get(Claim, ids[0]).status  # a later one

    assert app.state.context.db.write_now(group) == ("queued", "exported")


async def test_writing_a_batch_again_is_audited_without_personal_data(
        app, client, pharmacy, operations):
    """A file made again carries every claim's personal data again: who asked, for which
    operator and batch, how many claims; nothing of the claims themselves."""
    import json

    from synthetic import PEOPLE

    await queue_claims(client, pharmacy, operations, [claim_body("AU1"), claim_body("AU2")])
    response = await client.post("/v1/operators/opera/exports", headers=operations)
    batch_id = response.headers["batch-id"]
    again = await client.get(f"/v1/operators/opera/exports/{batch_id}", headers=operations)
    assert again.status_code == 200
    exports = await rows(app, AuditEntry, col(AuditEntry.action) == "handover.export")
    entries = await rows(app, AuditEntry, col(AuditEntry.action) == "handover.export_again")
    assert [(e.object_id, e.outcome, e.actor) for e in entries] == [
        (batch_id, "ok", exports[0].actor)]
    assert json.loads(entries[0].details_json) == {"operator": "opera", "count": 2}
    assert not any(value in entries[0].details_json
                   for value in (PEOPLE[0]["nir"], PEOPLE[0]["last_name"], "AU1"))


async def exported(client, pharmacy, operations, bodies) -> tuple[list[str], str, str]:
    """Claims queued then exported through the API: (ids, batch id, batch file)."""
    ids = await queue_claims(client, pharmacy, operations, bodies)
    response = await client.post("/v1/operators/opera/exports", headers=operations)
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/jose"
    return ids, response.headers["batch-id"], response.text


async def statuses(client, pharmacy, ids) -> list[str]:
    return [(await client.get(f"/v1/claims/{i}", headers=pharmacy)).json()["status"]
            for i in ids]


async def test_a_tampered_batch_is_refused_by_the_operator(app, client, pharmacy, operations,
                                                           simulators):
    ids, _, batch_file = await exported(client, pharmacy, operations, [claim_body("TB1")])
    give_keys(simulators["opera"], app)
    head, key, iv, text, tag = batch_file.strip().split(".")
    flipped = text[:10] + ("A" if text[10] != "A" else "B") + text[11:]
    refused = await acknowledge(simulators["opera"], ".".join([head, key, iv, flipped, tag]))
    assert refused.status_code == 422
    assert (await ledger(simulators["opera"]))["claims"] == []
    assert await statuses(client, pharmacy, ids) == ["exported"]


def _resign(answer: str, mutate) -> str:
    """The acknowledgement's lines changed by `mutate`, signed again by the operator."""
    import json

    from handover_support import operator_keys
    from joserfc import jws
    from joserfc.jwk import OKPKey

    from adapters.batch_files import ACK_TYP, Algorithms, ndjson
    lines = [json.loads(line) for line in
             jws.extract_compact(answer.strip().encode()).payload.decode().splitlines()]
    lines = mutate(lines)
    key = OKPKey.import_key(operator_keys()[1])
    return jws.serialize_compact({"alg": "EdDSA", "typ": ACK_TYP}, ndjson(lines), key,
                                 registry=Algorithms(["EdDSA"]))


async def test_bad_acknowledgements_are_refused_whole_and_change_nothing(
        app, client, pharmacy, operations, simulators):
    ids, batch_id, batch_file = await exported(client, pharmacy, operations,
                                               [claim_body("BA1"), claim_body("BA2")])
    give_keys(simulators["opera"], app)
    answer = (await acknowledge(simulators["opera"], batch_file)).text
    head, body, signature = answer.strip().split(".")
    tampered = f"{head}.{body[:20]}{'A' if body[20] != 'A' else 'B'}{body[21:]}.{signature}"
    unknown = "clm_" + "0" * 26

    def with_unknown(lines):
        return [*lines[:2], {**lines[1], "claim_id": unknown}, *lines[2:]]

    def duplicated(lines):
        return [{**lines[0], "count": 3}, *lines[1:], lines[1]]

    def other_batch(lines):
        return [{**lines[0], "batch_id": "bat_" + "1" * 26},
                *({**line, "batch_id": "bat_" + "1" * 26} for line in lines[1:])]

    def more_than_asked(lines):
        return [lines[0], {**lines[1], "amc_cents": 10_000}, *lines[2:]]

    cases = {
        "tampered": (tampered, "signature does not verify"),
        "unknown claim": (_resign(answer, lambda ls: [{**ls[0], "count": 3},
                                                      *with_unknown(ls)[1:]]),
                          "not a claim of batch"),
        "duplicated": (_resign(answer, duplicated), "duplicated"),
        "other batch": (_resign(answer, other_batch), "no batch"),
        "amount": (_resign(answer, more_than_asked), "more than the claim asked"),
        "a receipt": (batch_file, "not a compact JWS"),
    }
    for name, (text, words) in cases.items():
        response = await client.post("/v1/operators/opera/acks", content=text,
                                     headers={**operations, "Content-Type": "application/jose"})
        assert response.status_code == 422, name
        assert response.json()["type"].endswith("acknowledgement-refused")
        messages = [e["message"] for e in response.json()["errors"]]
        assert any(words in m for m in messages), (name, messages)
        assert await statuses(client, pharmacy, ids) == ["exported", "exported"], name
    good = await client.post("/v1/operators/opera/acks", content=answer, headers=operations)
    assert good.status_code == 200 and good.json() == {
        "batch_id": batch_id, "accepted": 2, "rejected": 0, "awaiting": 0}
    replayed = await client.post("/v1/operators/opera/acks", content=answer, headers=operations)
    assert replayed.status_code == 422
    assert "already imported" in replayed.json()["errors"][0]["message"]
    refusals = await rows(app, AuditEntry, col(AuditEntry.action) == "handover.import",
                          col(AuditEntry.outcome) == "refused")
    assert len(refusals) == len(cases) + 1
    history = await rows(app, ClaimHistory, col(ClaimHistory.claim_id) == ids[0])
    assert [h.status for h in history].count("accepted") >= 1
    assert sum(1 for h in history if h.detail == f"acknowledged in batch {batch_id}") == 1


@pytest.mark.workers
async def test_a_claim_is_either_exported_or_drained_never_both(
        app, client, pharmacy, operations, simulators):
    """The drain runs against the simulator while small batches are exported: every claim
    ends in exactly one of them, and after the acknowledgements each is settled once."""
    ids = await queue_claims(client, pharmacy, operations,
                             [claim_body(f"RC{n}") for n in range(30)])
    give_keys(simulators["opera"], app)
    assert (await client.post("/v1/operators/opera/resume", headers=operations)).status_code == 200
    exported_ids: list[str] = []
    files = []
    while True:
        response = await client.post("/v1/operators/opera/exports?max=3", headers=operations)
        if response.status_code == 409:
            break  # nothing queued any more: the drain and the exports took everything
        assert response.status_code == 201
        files.append(response.text)
        batch = response.headers["batch-id"]
        exported_ids += [c.id for c in await rows(app, Claim, col(Claim.status) == "exported")
                         if c.id not in exported_ids]
        assert batch
    await eventually(lambda: all_settled_or_exported(app, ids), what="the drain's end")
    online = {c["key"] for c in (await ledger(simulators["opera"]))["claims"]}
    assert exported_ids and online, "no race: one side took every claim"
    assert online.isdisjoint(exported_ids)
    assert online | set(exported_ids) == set(ids)
    for batch_file in files:
        answer = await acknowledge(simulators["opera"], batch_file)
        imported = await client.post("/v1/operators/opera/acks", content=answer.text,
                                     headers=operations)
        assert imported.status_code == 200, imported.text
    assert await statuses(client, pharmacy, ids) == ["accepted"] * len(ids)
    book = (await ledger(simulators["opera"]))["claims"]
    assert sorted(c["key"] for c in book) == sorted(ids)
    assert {c["count"] for c in book} == {1}
    events = [(e.claim_id, e.type) for e in await rows(app, Event,
                                                       col(Event.type) == "claim.accepted")]
    assert sorted(claim_id for claim_id, _ in events) == sorted(ids)


async def all_settled_or_exported(app, ids) -> bool:
    claims = await rows(app, Claim, col(Claim.id).in_(ids))
    return all(c.status in ("accepted", "exported") for c in claims)


async def test_a_restart_between_export_and_acknowledgement_loses_nothing(
        app, client, pharmacy, operations, simulators, settings):
    """The gateway stops right after the export's commit, before the file was written
    anywhere: a new process writes the same batch again from the database, and its
    acknowledgement settles every claim once."""
    from asgi_lifespan import LifespanManager

    from gateway.main import create_app

    ids = await queue_claims(client, pharmacy, operations,
                             [claim_body("RS1"), claim_body("RS2")])
    batch, lost_file = await handover(app).export("opera", actor=ACTOR)
    del lost_file
    again = create_app(settings, configure_logs=False, run_workers=False)
    async with LifespanManager(again):
        context = again.state.context
        async with httpx.AsyncClient(transport=httpx.ASGITransport(again),
                                     base_url="http://gateway.test") as fresh:
            rewritten = await fresh.get(f"/v1/operators/opera/exports/{batch.id}",
                                        headers=operations)
            assert rewritten.status_code == 200, rewritten.text
            give_keys(simulators["opera"], again)
            answer = await acknowledge(simulators["opera"], rewritten.text)
            imported = await fresh.post("/v1/operators/opera/acks", content=answer.text,
                                        headers=operations)
            assert imported.status_code == 200 and imported.json()["accepted"] == 2
            assert await statuses(fresh, pharmacy, ids) == ["accepted", "accepted"]
        history = await context.db.read(lambda s: list(s.exec(
            select(ClaimHistory).where(col(ClaimHistory.claim_id).in_(ids),
                                       col(ClaimHistory.status) == "accepted",
                                       col(ClaimHistory.detail).startswith("accepted by"))
        ).all()))
        assert sorted(h.claim_id for h in history) == sorted(ids)


async def test_a_released_batch_goes_back_to_the_queue_oldest_first(
        app, client, pharmacy, operations, simulators):
    ids = await queue_claims(client, pharmacy, operations,
                             [claim_body(f"RL{n}") for n in range(3)])
    first = await client.post("/v1/operators/opera/exports?max=2", headers=operations)
    batch_id = first.headers["batch-id"]
    before = {c.id: c.queued_at for c in await rows(app, Claim)}
    board = {o["name"]: o for o in (await client.get("/v1/operators", headers=operations)).json()}
    assert (board["opera"]["queued"], board["opera"]["exported"]) == (1, 2)
    released = await client.post(f"/v1/operators/opera/exports/{batch_id}/release",
                                 headers=operations)
    assert released.status_code == 200 and released.json() == {
        "batch_id": batch_id, "released": 2}
    claims = {c.id: c for c in await rows(app, Claim)}
    assert [claims[i].status for i in ids] == ["queued"] * 3
    assert {i: claims[i].queued_at for i in ids} == before
    assert claims[ids[0]].maybe_sent and claims[ids[1]].maybe_sent  # looked up first
    board = {o["name"]: o for o in (await client.get("/v1/operators", headers=operations)).json()}
    assert (board["opera"]["queued"], board["opera"]["exported"]) == (3, 0)
    closed = await client.post(f"/v1/operators/opera/exports/{batch_id}/release",
                               headers=operations)
    assert closed.status_code == 409
    give_keys(simulators["opera"], app)
    late = await acknowledge(simulators["opera"], first.text)  # the operator had it anyway
    refused = await client.post("/v1/operators/opera/acks", content=late.text,
                                headers=operations)
    assert refused.status_code == 422 and "released" in refused.text
    second = await client.post("/v1/operators/opera/exports", headers=operations)
    order = await app.state.context.db.read(lambda s: [
        c.id for c in handover_repository.claims_of(s, second.headers["batch-id"])])
    assert order == ids
    listed = (await client.get("/v1/operators/opera/exports", headers=operations)).json()
    assert [(b["state"], b["count"], b["awaiting"]) for b in listed] == [
        ("exported", 3, 3), ("released", 2, 0)]
    actions = [(e.action, e.object_id) for e in await rows(app, AuditEntry)]
    assert ("handover.release", batch_id) in actions
    assert ("handover.export", batch_id) in actions


async def test_only_operations_keys_in_scope_hand_over(app, client, pharmacy, operations,
                                                       settings):
    from gateway.keys.admin import create_key

    assert (await client.post("/v1/operators/opera/exports", headers=pharmacy)).status_code == 403
    assert (await client.post("/v1/operators/opera/acks", content="x",
                              headers=pharmacy)).status_code == 403
    _, secret = create_key(settings, role="operations", operators=["santex"])
    other = {"Authorization": f"Bearer {secret}"}
    assert (await client.post("/v1/operators/opera/exports", headers=other)).status_code == 403
    assert (await client.get("/v1/operators/opera/exports", headers=other)).status_code == 403
    unset = await client.post("/v1/operators/santex/exports", headers=operations)
    assert unset.status_code == 409 and "handover_encryption_key" in unset.json()["detail"]
    empty = await client.post("/v1/operators/opera/exports", headers=operations)
    assert empty.status_code == 409 and empty.json()["type"].endswith("nothing-to-export")
    unknown = await client.get(f"/v1/operators/opera/exports/bat_{'0' * 26}",
                               headers=operations)
    assert unknown.status_code == 404


async def test_the_console_exports_takes_acknowledgements_and_releases(
        app, client, pharmacy, operations, simulators, settings):
    """Operations staff in the console: export (the file is the download), a refused
    upload shows every problem and changes nothing, a good one settles, release."""
    import re

    from console_people import log_in, make_person

    ids = await queue_claims(client, pharmacy, operations,
                             [claim_body("CO1"), claim_body("CO2"), claim_body("CO3")])
    staff = make_person(settings, "operations")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://gateway.test") as http:
        assert (await log_in(http, staff)).headers["location"] == "/console/"
        board = (await http.get("/console/operations")).text
        assert 'href="/console/operations/opera/batches"' in board
        page = (await http.get("/console/operations/opera/batches")).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        forged = await http.post("/console/operations/opera/exports", data={"max": "2"})
        assert forged.status_code == 403
        download = await http.post("/console/operations/opera/exports",
                                   data={"csrf_token": token, "max": "2"})
        assert download.status_code == 200, download.text
        assert download.headers["content-disposition"].startswith("attachment")
        give_keys(simulators["opera"], app)
        answer = (await acknowledge(simulators["opera"], download.text)).text
        bad = await http.post("/console/operations/opera/acks", data={"csrf_token": token},
                              files={"acks": ("acks.jws", answer[:-8] + "AAAAAAAA")})
        assert bad.status_code == 422 and "rien n'a été modifié" in bad.text
        assert await statuses(client, pharmacy, ids) == ["exported", "exported", "queued"]
        good = await http.post("/console/operations/opera/acks", data={"csrf_token": token},
                               files={"acks": ("acks.jws", answer)}, follow_redirects=True)
        assert "2 demande(s) réglée(s)" in good.text
        assert await statuses(client, pharmacy, ids) == ["accepted", "accepted", "queued"]
        second = await http.post("/console/operations/opera/exports",
                                 data={"csrf_token": token, "max": ""})
        assert second.status_code == 200, second.text
        batch_id = re.search(r'filename="(bat_[0-9A-Z]{26})\.jwe"',
                             second.headers["content-disposition"]).group(1)
        again = await http.get(f"/console/operations/opera/exports/{batch_id}")
        assert again.status_code == 200 and again.headers["content-type"] == "application/jose"
        released = await http.post(f"/console/operations/opera/exports/{batch_id}/release",
                                   data={"csrf_token": token}, follow_redirects=True)
        assert "1 demande(s) remise(s) en file" in released.text
        assert await statuses(client, pharmacy, ids) == ["accepted", "accepted", "queued"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://gateway.test") as http:
        pharmacist = make_person(settings, "pharmacist", finess="330001231")
        await log_in(http, pharmacist)
        assert (await http.get("/console/operations/opera/batches")).status_code == 403
