"""The FHIR R4 face in-process, against the simulated operators: the same claims, rights,
refusals, limits and replays as the REST API, in FHIR resources (docs/fhir.md)."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.claimresponse import ClaimResponse
from fhir.resources.R4B.coverageeligibilityresponse import CoverageEligibilityResponse
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir_samples import FHIR_JSON, fhir_claim, fhir_eligibility
from simulator_control import set_fault
from sqlmodel import select
from synthetic import claim_body, rights_body
from test_drain import gateway, wait_until

from gateway.claims.payload import payload_context
from gateway.fhir import systems
from gateway.keys.admin import create_key
from gateway.receipts.signing import verify
from gateway.storage.models import AuditEntry, Claim

pytestmark = pytest.mark.anyio
VOLATILE = {"id", "invoice_number", "idempotency_key", "request_hash", "created_at",
            "updated_at", "queued_at", "payload_enc", "data_key_id", "lease_owner",
            "lease_until", "last_attempt_at", "next_attempt_at", "settled_at",
            "operator_reference"}  # the operator numbers its answers in order


def outcome(answer) -> OperationOutcome:
    """The answer is an OperationOutcome, served as FHIR JSON and parsed by the library."""
    assert answer.headers["content-type"].startswith("application/fhir+json"), answer.text
    return OperationOutcome.model_validate(answer.json())


def expressions(answer) -> list[str]:
    return [e for issue in outcome(answer).issue for e in (issue.expression or [])]


def extension(resource, url):
    found = [e for e in resource.extension or [] if e.url == url]
    return {part.url: part for part in found[0].extension} if found else None


async def audited(app, object_id: str) -> list[tuple[str, str, str]]:
    """The audit trail's entries about an object: (role, action, outcome)."""
    entries = await app.state.context.db.read(lambda session: session.exec(
        select(AuditEntry).where(AuditEntry.object_id == object_id)).all())
    return [(entry.role, entry.action, entry.outcome) for entry in entries]


async def stored(app, claim_id: str) -> tuple[dict, dict]:
    """The claim row's columns and its decrypted payload."""
    context = app.state.context
    row = await context.db.read(lambda session: session.get(Claim, claim_id))
    payload = context.cipher.decrypt_json(row.payload_enc, context=payload_context(row.id))
    return row.model_dump(), payload


async def test_the_same_claim_through_both_faces_is_the_same_stored_claim(app, client,
                                                                          pharmacy):
    fhir_headers = {**pharmacy, **FHIR_JSON}
    rest = await client.post("/v1/claims", json=claim_body("RT-REST"), headers=pharmacy)
    fhir = await client.post("/fhir/R4/Claim", json=fhir_claim(claim_body("RT-FHIR")),
                             headers={**fhir_headers, "Idempotency-Key": "rt-fhir"})
    assert (rest.status_code, fhir.status_code) == (201, 201), fhir.text
    response = ClaimResponse.model_validate(fhir.json())
    claim_id = response.identifier[0].value
    assert fhir.headers["location"] == f"/fhir/R4/ClaimResponse/{response.id}"
    assert response.outcome == "complete" and response.patient.display == rest.json()[
        "nir_masked"]
    (rest_row, rest_payload), (fhir_row, fhir_payload) = (
        await stored(app, rest.json()["id"]), await stored(app, claim_id))
    assert rest_payload.pop("invoice_number") == "RT-REST"
    assert fhir_payload.pop("invoice_number") == "RT-FHIR"
    assert fhir_payload == rest_payload
    assert {k: v for k, v in fhir_row.items() if k not in VOLATILE} == {
        k: v for k, v in rest_row.items() if k not in VOLATILE}
    assert fhir_row["idempotency_key"] == "rt-fhir"
    assert await audited(app, claim_id) == await audited(app, rest.json()["id"]) == [
        ("pharmacy", "claim.submit", "pending")]
    # the REST claim's very body through the FHIR face: the same request, so its replay
    again = await client.post("/fhir/R4/Claim", json=fhir_claim(claim_body("RT-REST")),
                              headers=fhir_headers)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["identifier"][0]["value"] == rest.json()["id"]


async def test_idempotency_key_replays_and_refuses_as_on_v1_claims(client, pharmacy):
    headers = {**pharmacy, **FHIR_JSON, "Idempotency-Key": "fh-key-1"}
    first = await client.post("/fhir/R4/Claim", json=fhir_claim(claim_body("IK-1")),
                              headers=headers)
    replay = await client.post("/fhir/R4/Claim", json=fhir_claim(claim_body("IK-1")),
                               headers=headers)
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["identifier"] == first.json()["identifier"]
    reused = await client.post("/fhir/R4/Claim", json=fhir_claim(claim_body("IK-2")),
                               headers=headers)
    on_rest = await client.post("/v1/claims", json=claim_body("IK-3"),
                                headers={**pharmacy, "Idempotency-Key": "fh-key-1"})
    assert reused.status_code == on_rest.status_code == 422
    issue = outcome(reused).issue[0]
    assert issue.code == "duplicate" and issue.details.coding[0].code == "idempotency-key-reused"
    assert issue.diagnostics.startswith("Idempotency-Key:")
    other_body = claim_body("IK-1", member_number="B999")
    duplicate = await client.post("/fhir/R4/Claim", json=fhir_claim(other_body),
                                  headers={**pharmacy, **FHIR_JSON})
    assert duplicate.status_code == 409
    assert outcome(duplicate).issue[0].details.coding[0].code == "duplicate-invoice"


async def test_if_none_exist_names_the_claims_own_invoice(client, pharmacy):
    headers = {**pharmacy, **FHIR_JSON}
    matching = {**headers, "If-None-Exist": f"identifier={systems.INVOICE}|INE-1"}
    first = await client.post("/fhir/R4/Claim", json=fhir_claim(claim_body("INE-1")),
                              headers=matching)
    again = await client.post("/fhir/R4/Claim", json=fhir_claim(claim_body("INE-1")),
                              headers=matching)
    assert first.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    other = {**headers, "If-None-Exist": f"identifier={systems.INVOICE}|SOMETHING-ELSE"}
    refused = await client.post("/fhir/R4/Claim", json=fhir_claim(claim_body("INE-2")),
                                headers=other)
    assert refused.status_code == 422
    assert expressions(refused) == ["Claim.identifier[0].value"]
    assert "If-None-Exist" in outcome(refused).issue[0].diagnostics


async def test_refusals_are_those_of_the_rest_api(client, pharmacy, other_pharmacy,
                                                  operations):
    body = fhir_claim(claim_body("RF-1"))
    no_key = await client.post("/fhir/R4/Claim", json=body, headers=FHIR_JSON)
    assert no_key.status_code == 401 and outcome(no_key).issue[0].code == "login"
    assert no_key.headers["WWW-Authenticate"] == "Bearer"
    for path, resource in (("/fhir/R4/Claim", body),
                           ("/fhir/R4/CoverageEligibilityRequest",
                            fhir_eligibility(rights_body()))):
        wrong_role = await client.post(path, json=resource, headers={**operations, **FHIR_JSON})
        assert wrong_role.status_code == 403 and outcome(wrong_role).issue[0].code == "forbidden"
    mine = await client.post("/fhir/R4/Claim", json=body, headers={**pharmacy, **FHIR_JSON})
    theirs = await client.get(mine.headers["location"], headers=other_pharmacy)
    assert theirs.status_code == 404 and outcome(theirs).issue[0].code == "not-found"
    assert "RF-1" not in theirs.text and mine.json()["id"] not in theirs.text
    read = await client.get(mine.headers["location"], headers=operations)
    assert read.status_code == 403


async def test_rate_limits_apply_per_class(app, client, pharmacy):
    limits = app.state.context.limiter._per_minute
    limits.update({"claims": 1, "reads": 1, "rights": 1})
    headers = {**pharmacy, **FHIR_JSON}
    created = await client.post("/fhir/R4/Claim", json=fhir_claim(claim_body("RL-1")),
                                headers=headers)
    over = await client.post("/fhir/R4/Claim", json=fhir_claim(claim_body("RL-2")),
                             headers=headers)
    assert created.status_code == 201 and over.status_code == 429
    assert outcome(over).issue[0].code == "throttled" and int(over.headers["Retry-After"]) >= 1
    assert (await client.get(created.headers["location"], headers=pharmacy)).status_code == 200
    assert (await client.get(created.headers["location"], headers=pharmacy)).status_code == 429
    eligibility = fhir_eligibility(rights_body())
    assert (await client.post("/fhir/R4/CoverageEligibilityRequest", json=eligibility,
                              headers=headers)).status_code == 200
    limited = await client.post("/fhir/R4/CoverageEligibilityRequest", json=eligibility,
                                headers=headers)
    assert limited.status_code == 429 and outcome(limited).issue[0].code == "throttled"


async def test_a_queued_claim_carries_its_receipt_and_is_followed_to_its_answer(
        settings, simulators):
    async with gateway(settings, simulators) as (app, http):
        _, ops = create_key(settings, role="operations")
        paused = await http.post("/v1/operators/opera/pause", json={"reason": "test"},
                                 headers={"Authorization": f"Bearer {ops}"})
        assert paused.status_code == 200, paused.text
        answer = await http.post("/fhir/R4/Claim", json=fhir_claim(claim_body("Q-1")),
                                 headers=FHIR_JSON)
        assert answer.status_code == 202, answer.text
        queued = ClaimResponse.model_validate(answer.json())
        assert queued.outcome == "queued"
        receipt = extension(queued, systems.RECEIPT)
        assert receipt["decision"].valueCode == "provisional"
        assert receipt["amcAmount"].valueMoney.value * 100 == 280
        claim_id = queued.identifier[0].value
        rest = (await http.get(f"/v1/claims/{claim_id}")).json()["coverage"]["receipt"]
        assert receipt["token"].valueString == rest["token"]
        assert receipt["verifyUrl"].valueUrl == rest["verify_url"]
        assert receipt["receiptId"].valueString == rest["id"]
        jwks = (await http.get("/.well-known/jwks.json")).json()
        verified = verify(receipt["token"].valueString, jwks, issuer=settings.public_url)
        assert verified.payload["claim_id"] == claim_id and verified.payload["amc_cents"] == 280

        resumed = await http.post("/v1/operators/opera/resume",
                                  headers={"Authorization": f"Bearer {ops}"})
        assert resumed.status_code == 200

        async def answered() -> bool:
            now = await http.get(answer.headers["location"])
            return bool(now.json()["outcome"] == "complete")

        assert await wait_until(answered)
        final = ClaimResponse.model_validate((await http.get(answer.headers["location"])).json())
        assert extension(final, systems.RECEIPT)["status"].valueCode == "honored"
        assert [t.amount.value * 100 for t in final.total] == [280, 280]
        assert any("accepted" in note.text for note in final.processNote)


async def test_eligibility_from_the_operator_then_from_the_cache_said_so(client, pharmacy,
                                                                        simulators):
    headers = {**pharmacy, **FHIR_JSON}
    fresh = await client.post("/fhir/R4/CoverageEligibilityRequest",
                              json=fhir_eligibility(rights_body()), headers=headers)
    assert fresh.status_code == 200, fresh.text
    answer = CoverageEligibilityResponse.model_validate(fresh.json())
    assert answer.outcome == "complete" and answer.insurance[0].inforce is True
    assert extension(answer, systems.RIGHTS_SOURCE)["source"].valueCode == "operator"
    rest = (await client.post("/v1/rights", json=rights_body(), headers=pharmacy)).json()
    assert {i.category.coding[0].code: i.benefit[0].allowedUnsignedInt
            for i in answer.insurance[0].item} == rest["guarantees"]

    await set_fault(simulators["opera"], "down")
    cached = CoverageEligibilityResponse.model_validate((await client.post(
        "/fhir/R4/CoverageEligibilityRequest", json=fhir_eligibility(rights_body()),
        headers=headers)).json())
    source = extension(cached, systems.RIGHTS_SOURCE)
    assert source["source"].valueCode == "cache" and cached.insurance[0].inforce is True
    assert "cached answer" in cached.disposition and source["asOf"].valueDateTime
    unknown = CoverageEligibilityResponse.model_validate((await client.post(
        "/fhir/R4/CoverageEligibilityRequest", json=fhir_eligibility(rights_body(person=1)),
        headers=headers)).json())
    assert unknown.outcome == "error" and unknown.insurance[0].inforce is None
    assert extension(unknown, systems.RIGHTS_SOURCE)["source"].valueCode == "none"


async def test_faulty_requests_get_an_operation_outcome_never_a_5xx(client, pharmacy):
    headers = {**pharmacy, **FHIR_JSON}
    unknown = fhir_claim(claim_body("E-1"))
    unknown["contained"][0]["nickname"] = "Clairette"
    answer = await client.post("/fhir/R4/Claim", json=unknown, headers=headers)
    assert answer.status_code == 400 and expressions(answer) == ["Claim.contained[0].nickname"]
    assert outcome(answer).issue[0].code == "structure"
    sub_cent = fhir_claim(claim_body("E-2"))
    sub_cent["item"][0]["unitPrice"]["value"] = 8.001
    answer = await client.post("/fhir/R4/Claim", json=sub_cent, headers=headers)
    assert answer.status_code == 422 and expressions(answer) == ["Claim.item[0].unitPrice.value"]
    unrouted = fhir_claim(claim_body("E-3", insurer_number="777777777"))
    answer = await client.post("/fhir/R4/Claim", json=unrouted, headers=headers)
    assert answer.status_code == 422
    assert expressions(answer) == ["Claim.contained[3].payor[0].identifier[0].value"]
    for content, kind in ((b"{", "application/fhir+json"), (b"<Claim/>", "application/xml")):
        answer = await client.post("/fhir/R4/Claim", content=content,
                                   headers={**pharmacy, "Content-Type": kind})
        assert answer.status_code in (400, 415) and outcome(answer).issue
    too_big = await client.post("/fhir/R4/Claim", content=b" " * 70_000, headers=headers)
    assert too_big.status_code == 413 and outcome(too_big).issue[0].code == "too-long"
    nowhere = await client.get("/fhir/R4/Patient/1", headers=pharmacy)
    assert nowhere.status_code == 404 and outcome(nowhere).issue[0].code == "not-found"
    assert (await client.get("/v1/nowhere")).headers["content-type"] == (
        "application/problem+json")  # the REST API keeps its own errors


async def test_the_capability_statement_lists_exactly_what_is_served(app, client, pharmacy):
    from test_object_authorization import app_routes

    statement = (await client.get("/fhir/R4/metadata")).json()
    assert statement["fhirVersion"] == "4.0.1"
    declared = {(r["type"], i["code"]) for r in statement["rest"][0]["resource"]
                for i in r["interaction"]}
    served = set()
    for method, path in app_routes(app):
        if path.startswith("/fhir/R4/") and path != "/fhir/R4/metadata":
            kind, *rest = path.removeprefix("/fhir/R4/").split("/")
            served.add((kind, "read" if rest and method == "GET" else "create"))
    assert declared == served == {("Claim", "create"), ("ClaimResponse", "read"),
                                  ("CoverageEligibilityRequest", "create")}
    conditional = {r["type"]: r.get("conditionalCreate") for r in
                   statement["rest"][0]["resource"]}
    assert conditional["Claim"] is True and conditional["CoverageEligibilityRequest"] is False
