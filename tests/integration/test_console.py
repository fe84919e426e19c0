"""The web console (issue 5): login and sessions, the pharmacist's dashboard, the operations
board and its forms, the audit page, the demo controls; over HTTP, with cookies and CSRF."""

from __future__ import annotations

import re
from contextlib import asynccontextmanager

import httpx
import pytest
from console_people import LOGIN_TOKEN, Person, form_value, log_in, make_person, post_password
from simulator_control import set_fault
from sqlalchemy import text
from sqlmodel import select
from synthetic import OTHER_FINESS, PEOPLE, claim_body

from gateway.storage.db import Database
from gateway.storage.models import AuditEntry, Claim

pytestmark = pytest.mark.anyio
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
NAMES = [p[field] for p in PEOPLE for field in ("last_name", "first_name")]


REFUSED = "Identifiant ou mot de passe incorrect."


def secret_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].split()[1]


@pytest.fixture
def pharmacist(settings, app) -> Person:
    """The pharmacist of FINESS 330001231 (the `pharmacy` key's pharmacy)."""
    return make_person(settings, "pharmacist", finess="330001231")


@pytest.fixture
def other_pharmacist(settings, app) -> Person:
    return make_person(settings, "pharmacist", finess=OTHER_FINESS)


@pytest.fixture
def operator_staff(settings, app) -> Person:
    """An operations account on every operator."""
    return make_person(settings, "operations")


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
async def browser(app, person: Person | None = None):
    """A client with its own cookie jar, logged in as `person` when given."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                 base_url="http://gateway.test") as http:
        if person is not None:
            answer = await log_in(http, person)
            assert answer.headers["location"] == "/console/", answer.headers
        yield http


async def queue_claim(client, pharmacy, simulators, invoice: str = "C1") -> dict:
    await set_fault(simulators["opera"], "down")
    response = await client.post("/v1/claims", json=claim_body(invoice), headers=pharmacy)
    assert response.status_code == 202, response.text
    return response.json()


async def test_login_sets_a_strict_cookie_and_redirects_by_role(app, settings, pharmacist,
                                                                operator_staff):
    admin = make_person(settings, "admin")
    for person, home in ((pharmacist, "/console/"), (operator_staff, "/console/operations"),
                         (admin, "/console/operations")):
        async with browser(app) as http:
            answer = await post_password(http, person.email, person.password)
            assert answer.status_code == 303
            assert answer.headers["location"] == "/console/login/code"
            cookie = answer.headers["set-cookie"].lower()
            assert "gw_console=" in cookie and "httponly" in cookie
            assert "samesite=strict" in cookie and "secure" not in cookie
            # the password alone opens no page: the second factor is still to come
            waiting = await http.get(home)
            assert waiting.status_code == 303
            assert waiting.headers["location"] == "/console/login"
            page = await http.get("/console/login/code")
            answer = await http.post("/console/login/code", data={
                "code": person.code(), "csrf_token": csrf(page.text)})
            assert answer.status_code == 303 and answer.headers["location"] == "/console/"
            landing = await http.get("/console/")
            if home == "/console/":
                assert landing.status_code == 200
            else:
                assert landing.status_code == 303 and landing.headers["location"] == home
            assert (await http.get(home)).status_code == 200
        rows = audit_rows(settings)
        assert ("console.login_password", person.user_id, "ok") in rows
        assert ("console.second_factor", person.user_id, "ok") in rows


async def test_a_bad_password_is_refused_and_audited(app, settings, pharmacist):
    async with browser(app) as http:
        # an unknown account first: those are audited once per address and window, at the
        # address's first failure (see gateway.identity.login)
        unknown = await post_password(http, "nobody@test.invalid", pharmacist.password)
        assert unknown.status_code == 401 and REFUSED in unknown.text
        assert "gw_console" not in unknown.headers.get("set-cookie", "")
        answer = await post_password(http, pharmacist.email, "not the password")
        assert answer.status_code == 401 and REFUSED in answer.text
        assert "gw_console" not in answer.headers.get("set-cookie", "")
        assert (await http.get("/console/")).headers["location"] == "/console/login"
    rows = audit_rows(settings)
    assert ("console.login", pharmacist.user_id, "refused") in rows
    assert ("console.login", None, "refused_unknown") in rows
    assert not [row for row in rows if row[0] in ("console.login_password",
                                                  "console.second_factor")]


async def test_an_api_key_no_longer_opens_the_console(app, settings, pharmacy, operations):
    for secret in (secret_of(pharmacy), secret_of(operations)):
        async with browser(app) as http:
            token = form_value(LOGIN_TOKEN, (await http.get("/console/login")).text)
            for form in ({"key": secret}, {"email": "", "password": secret},
                         {"email": secret, "password": secret}):
                answer = await http.post("/console/login", data={**form, "login_token": token})
                assert answer.status_code == 401 and REFUSED in answer.text, form
                assert "gw_console" not in answer.headers.get("set-cookie", "")
            assert "gw_console" not in http.cookies
            home = await http.get("/console/")
            assert home.status_code == 303 and home.headers["location"] == "/console/login"
    assert not [row for row in audit_rows(settings) if row[2] == "ok"
                and row[0].startswith("console.")]


async def test_logout_ends_the_session(app, pharmacist):
    async with browser(app, pharmacist) as http:
        token = http.cookies["gw_console"]
        page = await http.get("/console/")
        answer = await http.post("/console/logout", data={"csrf_token": csrf(page.text)})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    async with browser(app) as stale:
        stale.cookies.set("gw_console", token)
        again = await stale.get("/console/")
        assert again.status_code == 303 and again.headers["location"] == "/console/login"


async def test_console_pages_carry_strict_security_headers(app, client, pharmacist):
    async with browser(app, pharmacist) as http:
        for answer in (await client.get("/console/login"), await http.get("/console/")):
            policy = answer.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "unsafe-inline" not in policy
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["referrer-policy"]
            assert "style=" not in answer.text and "<script>" not in answer.text
    assert (await client.get("/static/console.js")).status_code == 200
    assert (await client.get("/static/console.css")).status_code == 200


async def test_the_dashboard_says_an_operator_is_down_and_what_it_means(app, pharmacist):
    context = app.state.context
    context.operators.get("opera").breaker.trip()
    santex = context.operators.get("santex")
    santex.settings = santex.settings.model_copy(update={"provisional": "none"})
    santex.breaker.trip()
    async with browser(app, pharmacist) as http:
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
                                                                 pharmacist, other_pharmacist,
                                                                 simulators):
    claim = await queue_claim(client, pharmacy, simulators)
    receipt = claim["coverage"]["receipt"]
    async with browser(app, pharmacist) as http:
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
    async with browser(app, other_pharmacist) as other:
        foreign = await other.get(f"/console/claims/{claim['id']}")
        assert foreign.status_code == 404 and foreign.headers["content-type"].startswith(
            "text/html")
        assert (await other.get(f"/console/receipts/{receipt['id']}/print")).status_code == 404
        assert claim["id"] not in (await other.get("/console/")).text


async def test_the_fragment_holds_the_dashboard_sections(app, pharmacist):
    async with browser(app, pharmacist) as http:
        fragment = await http.get("/console/fragments/dashboard")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    for marker in ('<section id="operators"', '<section id="queued"', '<section id="failed"',
                   '<section id="recent"', '<p id="outstanding"'):
        assert marker in fragment.text


async def test_a_pharmacist_gets_403_pages_on_operations_and_audit(app, pharmacist):
    async with browser(app, pharmacist) as http:
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


async def test_a_form_without_its_csrf_token_is_refused(app, operator_staff):
    async with browser(app, operator_staff) as http:
        for data in ({"reason": "x"}, {"reason": "x", "csrf_token": "forged"}):
            answer = await http.post("/console/operations/opera/pause", data=data)
            assert answer.status_code == 403 and "Formulaire expiré" in answer.text
        board = (await http.get("/console/operations")).text
        assert 'class="pause"' in board and 'class="resume"' not in board


async def test_pause_resume_and_replay_through_the_forms(app, client, pharmacy, operator_staff,
                                                         simulators, settings):
    await queue_claim(client, pharmacy, simulators, "R1")
    await queue_claim(client, pharmacy, simulators, "R2")
    async with browser(app, operator_staff) as http:
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
                                                                      operator_staff,
                                                                      simulators, settings):
    claim = await queue_claim(client, pharmacy, simulators, "F1")

    def fail(session):  # type: ignore[no-untyped-def]
        row = session.get(Claim, claim["id"])
        row.status, row.last_error, row.attempts = "failed", "operator answered 500", 8
        session.add(row)

    database = Database(settings.database_url)
    database.write_now(fail)
    database.engine.dispose()
    async with browser(app, operator_staff) as http:
        page = (await http.get("/console/operations/opera/failed")).text
    row = re.search(rf'<tr data-claim-id="{claim["id"]}">.*?</tr>', page, re.S)
    assert row and "operator answered 500" in row.group(0) and "F1" in row.group(0)
    assert claim["nir_masked"] not in page and not [n for n in NAMES if n in page]


async def test_a_scoped_operations_account_sees_and_acts_on_its_operators_only(app,
                                                                                 settings):
    scoped = make_person(settings, "operations", operators=["santex"])
    async with browser(app, scoped) as http:
        board = (await http.get("/console/operations")).text
        assert 'data-operator="santex"' in board and 'data-operator="opera"' not in board
        answer = await http.post("/console/operations/opera/pause",
                                 data={"csrf_token": csrf(board), "reason": "x"})
        assert answer.status_code == 403


async def test_the_admin_sees_the_audit_trail_and_its_verification(app, settings):
    admin = make_person(settings, "admin")
    async with browser(app, admin) as http:
        page = await http.get("/console/audit")
    assert page.status_code == 200
    assert re.search(r"Journal intègre : \d+ entrées vérifiées \(dernière vérification "
                     r"complète commencée le ", page.text)
    trail = section(page.text, "table", "audit")
    assert "console.login_password" in trail and "console.second_factor" in trail


async def test_the_audit_page_names_an_entry_altered_after_its_last_full_check(
        app, settings):
    admin = make_person(settings, "admin")
    async with browser(app, admin) as http:
        intact = await http.get("/console/audit")  # the first view runs the full check
        assert 'data-verified="true"' in intact.text
        async with browser(app, make_person(settings, "operations")):
            pass  # a login: entries after the full check's checkpoint
        database = Database(settings.database_url)
        try:
            last = database.read_now(lambda s: max(e.id or 0 for e in s.exec(
                select(AuditEntry)).all()))
            database.write_now(lambda s: s.execute(
                text("UPDATE audit_log SET outcome = 'forged' WHERE id = :id"), {"id": last}))
        finally:
            database.engine.dispose()
        page = await http.get("/console/audit")
    assert 'data-verified="false"' in page.text
    assert f"Journal altéré à l&#39;entrée {last} : entrée modifiée" in page.text


async def test_the_demo_panel_breaks_and_mends_an_operator_and_sends_a_sample(
        app, pharmacist, simulators, settings):
    from gateway.demo.controls import DemoControls, mount

    async with browser(app, pharmacist) as http:
        assert 'id="demo"' not in (await http.get("/console/")).text
        assert (await http.post("/console/demo/sample", data={"csrf_token": "x"})
                ).status_code == 404  # the gateway alone has no demo routes
        mount(app, DemoControls(
            simulators={"opera": "http://opera.test"}, finess="330001231",
            transports={"opera": httpx.ASGITransport(simulators["opera"])}))
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
            async with browser(app) as stranger:  # no session: nothing breaks, nothing sent
                refused = await stranger.post("/console/demo/fault", data={
                    "csrf_token": csrf(page), "operator": "opera", "mode": "ok"})
                assert refused.status_code in (303, 401, 403)
                assert refused.headers.get("location", "/console/login").startswith(
                    "/console/login")
            async with httpx.AsyncClient(transport=httpx.ASGITransport(simulators["opera"]),
                                         base_url="http://sim.test") as sim:
                assert (await sim.get("/_faults")).json()["mode"] == "down"
        finally:
            del app.state.demo
    actions = [action for action, _, _ in audit_rows(settings)]
    assert "demo.fault" in actions and "demo.sample_claim" in actions
