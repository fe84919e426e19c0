"""The web console (issue 5): login and sessions, the pharmacist's dashboard, the operations
board and its forms, the audit page, the demo controls; over HTTP, with cookies and CSRF."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager

import httpx
import pytest
from simulator_control import set_fault
from sqlmodel import select
from synthetic import PEOPLE, claim_body

from gateway.db import Database
from gateway.keys_admin import create_key
from gateway.models import AuditEntry, Claim

pytestmark = pytest.mark.anyio
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NAMES = [p[field] for p in PEOPLE for field in ("last_name", "first_name")]


def secret_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split()[1]


def csrf(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def section(html: str, tag: str, id_: str) -> str:
    match = re.search(rf'<{tag} id="{id_}".*?</{tag}>', html, re.S)
    assert match, f"no <{tag} id={id_}>"
    return match.group(0)


def audit_rows(settings) -> list[tuple[str, str | None, str]]:
    database = Database(settings.database_url)
    try:
        return database.read_now(lambda s: [(e.action, e.object_id, e.outcome)
                                            for e in s.exec(select(AuditEntry)).all()])
    finally:
        database.engine.dispose()


@asynccontextmanager
async def browser(app, secret: str | None = None):
    """A client with its own cookie jar, logged in with `secret` when given."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://gateway.test") as http:
        if secret is not None:
            answer = await http.post("/console/login", data={"key": secret})
            assert answer.status_code == 303, answer.text
        yield http


async def queue_claim(client, pharmacy, simulators, invoice: str = "C1") -> dict:
    await set_fault(simulators["opera"], "down")
    response = await client.post("/v1/claims", json=claim_body(invoice), headers=pharmacy)
    assert response.status_code == 202, response.text
    return response.json()


async def test_login_sets_a_strict_cookie_and_redirects_by_role(app, pharmacy, operations,
                                                                settings):
    _, admin = create_key(settings, role="admin")
    for secret, home in ((secret_of(pharmacy), "/console/"),
                         (secret_of(operations), "/console/operations"),
                         (admin, "/console/operations")):
        async with browser(app) as http:
            answer = await http.post("/console/login", data={"key": secret})
            assert answer.status_code == 303 and answer.headers["location"] == home
            cookie = answer.headers["set-cookie"].lower()
            assert "gw_console=" in cookie and "httponly" in cookie
            assert "samesite=strict" in cookie and "secure" not in cookie
            assert (await http.get(home)).status_code == 200


async def test_a_bad_key_is_refused_and_audited(client, settings):
    answer = await client.post("/console/login", data={"key": "key_0123456789abcdef.nope"})
    assert answer.status_code == 401 and "Clé inconnue" in answer.text
    assert "gw_console" not in answer.headers.get("set-cookie", "")
    assert ("console.login", None, "refused") in audit_rows(settings)


async def test_logout_ends_the_session(app, pharmacy):
    async with browser(app, secret_of(pharmacy)) as http:
        token = http.cookies["gw_console"]
        page = await http.get("/console/")
        answer = await http.post("/console/logout", data={"csrf_token": csrf(page.text)})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    async with browser(app) as stale:
        stale.cookies.set("gw_console", token)
        again = await stale.get("/console/")
        assert again.status_code == 303 and again.headers["location"] == "/console/login"


async def test_console_pages_carry_strict_security_headers(app, client, pharmacy):
    async with browser(app, secret_of(pharmacy)) as http:
        for answer in (await client.get("/console/login"), await http.get("/console/")):
            policy = answer.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["referrer-policy"]
            assert "style=" not in answer.text and "<script>" not in answer.text
    assert (await client.get("/static/console.js")).status_code == 200
    assert (await client.get("/static/console.css")).status_code == 200


async def test_the_dashboard_says_an_operator_is_down_and_what_it_means(app, pharmacy):
    context = app.state.context
    context.operators.get("opera").breaker.trip()
    santex = context.operators.get("santex")
    santex.settings = santex.settings.model_copy(update={"provisional": "none"})
    santex.breaker.trip()
    async with browser(app, secret_of(pharmacy)) as http:
        page = (await http.get("/console/")).text
    operators = section(page, "section", "operators")
    opera = re.search(r'<li class="operator[^"]*" data-operator="opera" data-state="open">'
                      r'.*?</li>', operators, re.S)
    assert opera and "indisponible depuis" in opera.group(0)
    assert "tiers payant assuré sous reçu provisoire" in opera.group(0)
    other = re.search(r'data-operator="santex" data-state="open">.*?</li>', operators, re.S)
    assert other and "avance des frais nécessaire" in other.group(0)
    assert '<script src="/static/console.js" defer></script>' in page and "<noscript>" in page


async def test_a_queued_claim_shows_its_receipt_and_a_masked_nir(app, client, pharmacy,
                                                                 other_pharmacy, simulators):
    claim = await queue_claim(client, pharmacy, simulators)
    receipt = claim["coverage"]["receipt"]
    async with browser(app, secret_of(pharmacy)) as http:
        page = (await http.get("/console/")).text
        queued = section(page, "section", "queued")
        row = re.search(rf'<tr data-claim-id="{claim["id"]}">.*?</tr>', queued, re.S)
        assert row and f'/console/receipts/{receipt["id"]}/print' in row.group(0)
        assert claim["nir_masked"] in row.group(0) and "2,80" in row.group(0)
        assert PEOPLE[0]["nir"] not in page and not [n for n in NAMES if n in page]
        assert "tiers payant normal" in page  # opera's breaker is still closed
        assert '<p id="outstanding"' in page and "2,80" in section(page, "p", "outstanding")
        printed = await http.get(f"/console/receipts/{receipt['id']}/print")
        assert printed.status_code == 200 and "Reçu provisoire" in printed.text
        detail = await http.get(f"/console/claims/{claim['id']}")
        assert detail.status_code == 200 and "Historique" in detail.text
        assert "en file d&#39;attente" in detail.text or "en file d'attente" in detail.text
        assert PEOPLE[0]["nir"] not in detail.text and PEOPLE[0]["last_name"] not in detail.text
    async with browser(app, secret_of(other_pharmacy)) as other:
        foreign = await other.get(f"/console/claims/{claim['id']}")
        assert foreign.status_code == 404 and foreign.headers["content-type"].startswith(
            "text/html")
        assert (await other.get(f"/console/receipts/{receipt['id']}/print")).status_code == 404
        assert claim["id"] not in (await other.get("/console/")).text


async def test_the_fragment_holds_the_dashboard_sections(app, pharmacy):
    async with browser(app, secret_of(pharmacy)) as http:
        fragment = await http.get("/console/fragments/dashboard")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    for marker in ('<section id="operators"', '<section id="queued"', '<section id="failed"',
                   '<section id="recent"', '<p id="outstanding"'):
        assert marker in fragment.text


async def test_a_pharmacy_gets_403_pages_on_operations_and_audit(app, pharmacy):
    async with browser(app, secret_of(pharmacy)) as http:
        for path in ("/console/operations", "/console/operations/opera/failed",
                     "/console/audit"):
            answer = await http.get(path)
            assert answer.status_code == 403, path
            assert answer.headers["content-type"].startswith("text/html")
            assert "Accès refusé" in answer.text
        missing = await http.get("/console/nowhere")
        assert missing.status_code == 404 and "Page introuvable" in missing.text
    async with browser(app) as anonymous:
        answer = await anonymous.get("/console/operations")
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login"


async def test_a_form_without_its_csrf_token_is_refused(app, operations):
    async with browser(app, secret_of(operations)) as http:
        for data in ({"reason": "x"}, {"reason": "x", "csrf_token": "forged"}):
            answer = await http.post("/console/operations/opera/pause", data=data)
            assert answer.status_code == 403 and "Formulaire expiré" in answer.text
        board = (await http.get("/console/operations")).text
        assert 'class="pause"' in board and 'class="resume"' not in board


async def test_pause_resume_and_replay_through_the_forms(app, client, pharmacy, operations,
                                                         simulators, settings):
    await queue_claim(client, pharmacy, simulators, "R1")
    await queue_claim(client, pharmacy, simulators, "R2")
    async with browser(app, secret_of(operations)) as http:
        board = (await http.get("/console/operations")).text
        token = csrf(board)
        assert '<tr data-operator="opera"' in board and '<tr data-operator="santex"' in board
        assert 'action="/console/operations/opera/pause" class="pause"' in board
        paused = await http.post("/console/operations/opera/pause",
                                 data={"csrf_token": token, "reason": "maintenance 14h"},
                                 follow_redirects=True)
        row = re.search(r'<tr data-operator="opera".*?</tr>', paused.text, re.S).group(0)
        assert 'data-paused="true"' in row and "maintenance 14h" in row
        assert 'action="/console/operations/opera/resume" class="resume"' in paused.text
        resumed = await http.post("/console/operations/opera/resume",
                                  data={"csrf_token": token}, follow_redirects=True)
        assert "Envois vers opera repris" in resumed.text
        counted = await http.post("/console/operations/opera/replay/count",
                                  data={"csrf_token": token, "status": "queued"})
        assert counted.status_code == 200
        assert "2 demandes seraient renvoyées" in counted.text
        assert 'class="replay-confirm"' in counted.text and "Confirmer le renvoi" in counted.text
        done = await http.post("/console/operations/opera/replay",
                               data={"csrf_token": token, "status": "queued"})
        assert done.status_code == 303 and "count=2" in done.headers["location"]
    actions = [(action, obj, outcome) for action, obj, outcome in audit_rows(settings)]
    for entry in (("operator.pause", "opera", "ok"), ("operator.resume", "opera", "ok"),
                  ("operator.replay", "opera", "dry_run"), ("operator.replay", "opera", "ok")):
        assert entry in actions


async def test_failed_claims_show_the_last_error_and_no_personal_data(app, client, pharmacy,
                                                                      operations, simulators,
                                                                      settings):
    claim = await queue_claim(client, pharmacy, simulators, "F1")

    def fail(session):  # type: ignore[no-untyped-def]
        row = session.get(Claim, claim["id"])
        row.status, row.last_error, row.attempts = "failed", "operator answered 500", 8
        session.add(row)

    database = Database(settings.database_url)
    database.write_now(fail)
    database.engine.dispose()
    async with browser(app, secret_of(operations)) as http:
        page = (await http.get("/console/operations/opera/failed")).text
    row = re.search(rf'<tr data-claim-id="{claim["id"]}">.*?</tr>', page, re.S)
    assert row and "operator answered 500" in row.group(0) and "F1" in row.group(0)
    assert claim["nir_masked"] not in page and not [n for n in NAMES if n in page]


async def test_a_scoped_operations_key_sees_and_acts_on_its_operators_only(app, settings):
    _, scoped = create_key(settings, role="operations", operators=["santex"])
    async with browser(app, scoped) as http:
        board = (await http.get("/console/operations")).text
        assert 'data-operator="santex"' in board and 'data-operator="opera"' not in board
        answer = await http.post("/console/operations/opera/pause",
                                 data={"csrf_token": csrf(board), "reason": "x"})
        assert answer.status_code == 403


async def test_the_admin_sees_the_audit_trail_and_its_verification(app, settings):
    _, admin = create_key(settings, role="admin")
    async with browser(app, admin) as http:
        page = await http.get("/console/audit")
    assert page.status_code == 200
    assert re.search(r"Journal intègre : \d+ entrées vérifiées", page.text)
    assert "console.login" in section(page.text, "table", "audit")


async def test_the_demo_panel_breaks_and_mends_an_operator_and_sends_a_sample(
        app, pharmacy, simulators, settings):
    from gateway.console.demo_controls import DemoControls

    async with browser(app, secret_of(pharmacy)) as http:
        assert 'id="demo"' not in (await http.get("/console/")).text
        assert (await http.post("/console/demo/sample", data={"csrf_token": "x"})
                ).status_code in (403, 404)
        app.state.demo = DemoControls(
            simulators={"opera": "http://opera.test"}, finess="330001231",
            transports={"opera": httpx.ASGITransport(simulators["opera"])})
        try:
            page = (await http.get("/console/")).text
            assert 'id="demo"' in page and "Mettre opera en panne" in page
            down = await http.post("/console/demo/fault", data={
                "csrf_token": csrf(page), "operator": "opera", "mode": "down"})
            assert down.status_code == 303
            async with httpx.AsyncClient(transport=httpx.ASGITransport(simulators["opera"]),
                                         base_url="http://sim.test") as sim:
                assert (await sim.get("/_faults")).json()["mode"] == "down"
            sent = await http.post("/console/demo/sample", data={"csrf_token": csrf(page)})
            assert sent.status_code == 303
            claim_id = re.search(r"claim=(clm_\w+)", sent.headers["location"]).group(1)
            queued = section((await http.get("/console/")).text, "section", "queued")
            assert f'data-claim-id="{claim_id}"' in queued
        finally:
            del app.state.demo
    actions = [action for action, _, _ in audit_rows(settings)]
    assert "demo.fault" in actions and "demo.sample_claim" in actions
