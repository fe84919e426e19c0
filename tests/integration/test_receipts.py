"""Provisional receipts end to end in-process: issue, verify, follow the claim, print."""

from __future__ import annotations

import asyncio
import html

import pytest
from simulator_control import set_fault
from synthetic import OTHER_FINESS, PEOPLE, claim_body, rights_body
from test_drain import gateway, wait_until

from gateway.keys.admin import create_key
from gateway.receipts.pages import ANTI_PHISHING_WARNING
from gateway.receipts.signing import verify

pytestmark = pytest.mark.anyio


async def queued_with_receipt(http, invoice="", *, body=None, **kwargs):
    response = await http.post("/v1/claims", json=body or claim_body(invoice, **kwargs))
    assert response.status_code == 202, response.text
    return response.json()


async def test_an_outage_issues_a_verifiable_receipt_honored_on_recovery(settings, simulators):
    async with gateway(settings, simulators) as (app, http):
        await set_fault(simulators["opera"], "down")
        claim = await queued_with_receipt(http, "RC1")
        coverage = claim["coverage"]
        assert coverage["decision"] == "provisional" and coverage["reason"] is None
        receipt = coverage["receipt"]
        assert (receipt["amc_cents"], receipt["patient_due_cents"], receipt["basis"]) == (
            280, 0, "card")
        assert receipt["id"].startswith("rcp_") and len(receipt["id"]) >= 24
        jwks = (await http.get("/.well-known/jwks.json")).json()
        verified = verify(receipt["token"], jwks, issuer=settings.public_url)
        assert verified.payload["rid"] == receipt["id"]
        assert verified.payload["claim_id"] == claim["id"]
        assert verified.payload["amc_cents"] == 280 and not verified.expired
        for person in PEOPLE:
            assert person["nir"] not in str(verified.payload)
        public = await http.get(f"/v1/receipts/{receipt['id']}", headers={"Authorization": ""})
        assert public.json()["status"] == "provisional"
        assert set(public.json()) == {"id", "status", "amc_cents", "patient_due_cents",
                                      "finess", "operator", "issued_at", "expires_at"}
        exposure = (await http.get("/v1/exposure")).json()
        assert exposure == {"outstanding_cents": 280, "by_operator": {"opera": 280}}

        await set_fault(simulators["opera"], "ok")
        assert await wait_until(lambda: _receipt_status(http, receipt["id"], "honored"))
        assert (await http.get("/v1/exposure")).json()["outstanding_cents"] == 0
        events = [e["type"] for e in (await http.get("/v1/events")).json()["events"]]
        assert events == ["claim.queued", "receipt.issued", "claim.accepted", "receipt.honored"]
        history = (await http.get(f"/v1/claims/{claim['id']}")).json()["history"]
        assert any("provisional receipt" in (step["detail"] or "") for step in history)


async def _receipt_status(http, receipt_id, status):
    return (await http.get(f"/v1/receipts/{receipt_id}")).json()["status"] == status


async def test_a_rejection_after_recovery_contests_the_receipt(settings, simulators):
    async with gateway(settings, simulators) as (app, http):
        await set_fault(simulators["opera"], "down")
        claim = await queued_with_receipt(http, "RC2", member_number="REJ7")
        receipt_id = claim["coverage"]["receipt"]["id"]
        await set_fault(simulators["opera"], "ok")
        assert await wait_until(lambda: _receipt_status(http, receipt_id, "contested"))
        events = (await http.get("/v1/events")).json()["events"]
        contested = [e for e in events if e["type"] == "receipt.contested"]
        assert len(contested) == 1 and "recouvrer" in contested[0]["message"]


async def test_cancelling_a_queued_claim_voids_its_receipt(settings, simulators):
    async with gateway(settings, simulators) as (app, http):
        await http.post("/v1/operators/opera/pause",
                        headers={"Authorization": f"Bearer {ops_secret(settings)}"})
        claim = await queued_with_receipt(http, "RC3")
        await http.post(f"/v1/claims/{claim['id']}/cancel")
        receipt_id = claim["coverage"]["receipt"]["id"]
        assert await _receipt_status(http, receipt_id, "void")


def ops_secret(settings):
    from gateway.keys.admin import create_key

    return create_key(settings, role="operations")[1]


async def test_cached_rights_basis_grants_the_guarantee_share(settings, simulators):
    async with gateway(settings, simulators) as (app, http):
        rights = rights_body(insurer_number="901234567")
        assert (await http.post("/v1/rights", json=rights)).json()["source"] == "operator"
        await set_fault(simulators["santex"], "down")
        body = claim_body("RC4", insurer_number="901234567")
        body["lines"].append({"code": "PH2", "product": "3400935955838", "quantity": 2,
                              "unit_price_cents": 500, "base_cents": 1000, "amo_cents": 150,
                              "amc_cents": 850})
        claim = (await http.post("/v1/claims", json=body)).json()
        receipt = claim["coverage"]["receipt"]
        # PH7 is guaranteed at 100 % (280), PH2 at 0 % by the simulator's rights answer.
        assert (receipt["basis"], receipt["amc_cents"]) == ("cached_rights", 280)
        assert receipt["patient_due_cents"] == 800 + 1000 - 520 - 150 - 280
        other = (await http.post("/v1/claims", json=claim_body("RC5", person=1,
                                                                 insurer_number="901234567")))
        assert other.json()["coverage"] == {"decision": "refused", "reason": "no_cached_rights",
                                            "receipt": None}


async def test_caps_refuse_with_their_reason(settings, simulators):
    provisional = settings.provisional.model_copy(update={"max_amc_cents_per_claim": 279})
    capped = settings.model_copy(update={"provisional": provisional})
    async with gateway(capped, simulators) as (app, http):
        await set_fault(simulators["opera"], "down")
        claim = await queued_with_receipt(http, "RC6")
        assert claim["coverage"] == {"decision": "refused", "reason": "over_claim_cap",
                                     "receipt": None}


async def test_the_print_page_is_the_pharmacys_and_shows_no_identity(settings, simulators):
    async with gateway(settings, simulators) as (app, http):
        await set_fault(simulators["opera"], "down")
        claim = await queued_with_receipt(http, "RC7")
        receipt = claim["coverage"]["receipt"]
        page = await http.get(receipt["print_url"].replace(settings.public_url, ""))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        text = html.unescape(page.text)
        assert ANTI_PHISHING_WARNING in " ".join(text.split())
        assert "2,80\u00a0€" in text and "<svg" in page.text and "<script" not in page.text
        for person in PEOPLE:
            for field in ("nir", "last_name", "first_name", "birth_date"):
                assert person[field] not in text
        from gateway.keys.admin import create_key
        _, other = create_key(settings, role="pharmacy", finess="690000880")
        denied = await http.get(f"/console/receipts/{receipt['id']}/print",
                                headers={"Authorization": f"Bearer {other}"})
        assert denied.status_code == 404
        anonymous = await http.get(f"/console/receipts/{receipt['id']}/print",
                                   headers={"Authorization": ""})
        assert anonymous.status_code == 401
        scanned = await http.get(f"/v1/receipts/{receipt['id']}",
                                 headers={"Accept": "text/html", "Authorization": ""})
        assert scanned.status_code == 200 and "authentique" in scanned.text.lower()
        unknown = await http.get("/v1/receipts/rcp_doesnotexist",
                                 headers={"Accept": "text/html", "Authorization": ""})
        assert unknown.status_code == 404 and "inconnu" in unknown.text.lower()


async def test_public_receipt_lookups_are_rate_limited(settings, simulators):
    limits = settings.limits.model_copy(update={"receipts_per_minute": 3})
    async with gateway(settings.model_copy(update={"limits": limits}), simulators) as (app, http):
        answers = [(await http.get("/v1/receipts/rcp_guess", headers={"Authorization": ""}))
                   .status_code for _ in range(4)]
        assert answers == [404, 404, 404, 429]


async def test_claims_queued_together_share_the_beneficiary_cap(settings, simulators):
    """Claims stored in one transaction (SQLite group commit) count each other's receipts."""
    provisional = settings.provisional.model_copy(
        update={"max_amc_cents_per_beneficiary_per_day": 280 * 3})
    capped = settings.model_copy(update={"provisional": provisional})
    async with gateway(capped, simulators) as (app, http):
        app.state.context.operators.get("opera").breaker.trip(open_for=60)
        answers = await asyncio.gather(*(
            http.post("/v1/claims", json=claim_body(f"GC{i}")) for i in range(8)))
        assert [a.status_code for a in answers] == [202] * 8
        decisions = sorted(a.json()["coverage"]["decision"] for a in answers)
        assert decisions == ["provisional"] * 3 + ["refused"] * 5
        assert {a.json()["coverage"]["reason"] for a in answers
                if a.json()["coverage"]["decision"] == "refused"} == {"over_beneficiary_daily_cap"}
        assert (await http.get("/v1/exposure")).json()["outstanding_cents"] == 280 * 3


async def test_the_beneficiary_cap_counts_receipts_of_earlier_transactions(settings, simulators):
    """On SQLite the beneficiary's stored exposure is read with the duplicate check (one
    statement): receipts committed earlier must count, with those staged alongside."""
    provisional = settings.provisional.model_copy(
        update={"max_amc_cents_per_beneficiary_per_day": 280 * 3})
    capped = settings.model_copy(update={"provisional": provisional})
    async with gateway(capped, simulators) as (app, http):
        app.state.context.operators.get("opera").breaker.trip(open_for=60)
        for i in range(2):  # committed one by one
            assert (await queued_with_receipt(http, f"EA{i}"))["coverage"]["decision"] \
                == "provisional"
        other = await queued_with_receipt(http, "EB0", person=1)  # another beneficiary
        assert other["coverage"]["decision"] == "provisional"
        answers = await asyncio.gather(*(
            http.post("/v1/claims", json=claim_body(f"EC{i}")) for i in range(3)))
        decisions = sorted(a.json()["coverage"]["decision"] for a in answers)
        assert decisions == ["provisional"] + ["refused"] * 2
        figures = [a.json() for a in answers if a.json()["coverage"]["decision"] == "refused"]
        assert {f["coverage"]["reason"] for f in figures} == {"over_beneficiary_daily_cap"}


async def test_the_pharmacy_cap_frees_up_as_its_receipts_are_honored(settings, simulators):
    """The outstanding total moves with every receipt: issued (alone and in a group
    commit), then honored once the operator accepts the claims."""
    provisional = settings.provisional.model_copy(
        update={"max_outstanding_cents_per_pharmacy": 280 * 3})
    capped = settings.model_copy(update={"provisional": provisional})
    async with gateway(capped, simulators) as (app, http):
        await set_fault(simulators["opera"], "down")
        first = await queued_with_receipt(http, "PC0", person=1)
        assert first["coverage"]["decision"] == "provisional"
        answers = await asyncio.gather(*(
            http.post("/v1/claims", json=claim_body(f"PC{i}", person=i % 2))
            for i in range(1, 5)))
        decisions = sorted(a.json()["coverage"]["decision"] for a in answers)
        assert decisions == ["provisional"] * 2 + ["refused"] * 2
        assert {a.json()["coverage"]["reason"] for a in answers
                if a.json()["coverage"]["decision"] == "refused"} \
            == {"over_pharmacy_outstanding_cap"}
        assert (await http.get("/v1/exposure")).json()["outstanding_cents"] == 280 * 3

        await set_fault(simulators["opera"], "ok")
        assert await wait_until(lambda: _receipt_status(
            http, first["coverage"]["receipt"]["id"], "honored"))
        assert await wait_until(lambda: _outstanding_is(http, 0))
        await set_fault(simulators["opera"], "down")
        again = await queued_with_receipt(http, "PC5", person=2)
        assert again["coverage"]["decision"] == "provisional"
        assert (await http.get("/v1/exposure")).json() == {
            "outstanding_cents": 280, "by_operator": {"opera": 280}}


async def _outstanding_is(http, cents):
    return (await http.get("/v1/exposure")).json()["outstanding_cents"] == cents


async def test_the_daily_cap_counts_the_nir_whatever_the_birth_date_or_rank(settings,
                                                                            simulators):
    """Issue 12: the cap was counted on NIR + birth date + rank, so varying them multiplied it."""
    provisional = settings.provisional.model_copy(
        update={"max_amc_cents_per_beneficiary_per_day": 280 * 2})
    capped = settings.model_copy(update={"provisional": provisional})
    async with gateway(capped, simulators) as (app, http):
        app.state.context.operators.get("opera").breaker.trip(open_for=60)
        decisions = []
        for rank, day in ((1, "14"), (2, "15"), (3, "16")):
            body = claim_body(f"NC{rank}")
            body["beneficiary"].update(birth_rank=rank, birth_date=f"1985-07-{day}")
            decisions.append((await queued_with_receipt(http, body=body))["coverage"])
        assert [d["decision"] for d in decisions] == ["provisional", "provisional", "refused"]
        assert decisions[2]["reason"] == "over_beneficiary_daily_cap"
        other = await queued_with_receipt(http, "NC4", person=1)  # another NIR: its own cap
        assert other["coverage"]["decision"] == "provisional"


async def test_another_pharmacys_rights_and_claims_are_no_evidence(settings, simulators):
    """`cached_rights` reads this pharmacy's rights lookups and accepted claims only."""
    async with gateway(settings, simulators) as (app, http):
        rights = rights_body(person=0, insurer_number="901234567")
        assert (await http.post("/v1/rights", json=rights)).json()["source"] == "operator"
        accepted = await http.post("/v1/claims", json=claim_body(
            "EV1", person=1, insurer_number="901234567"))
        assert accepted.json()["status"] == "accepted"
        _, secret = create_key(settings, role="pharmacy", finess=OTHER_FINESS)
        other = {"Authorization": f"Bearer {secret}"}
        await set_fault(simulators["santex"], "down")
        for person in (0, 1):
            theirs = await http.post("/v1/claims", headers=other, json=claim_body(
                f"EVB{person}", person=person, finess=OTHER_FINESS, insurer_number="901234567"))
            assert theirs.json()["coverage"] == {"decision": "refused",
                                                 "reason": "no_cached_rights", "receipt": None}
        for person in (0, 1):
            mine = await http.post("/v1/claims", json=claim_body(
                f"EVA{person}", person=person, insurer_number="901234567"))
            assert mine.json()["coverage"]["decision"] == "provisional", mine.text
