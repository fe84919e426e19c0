"""Console login through Pro Santé Connect (issue 11), against the PSC simulator in process:
the authorization code flow with PKCE, the ID token and userinfo verified, a person let
in only where their activities name a pharmacy this gateway serves or an admin linked
their RPPS; a tampered ID token, another nonce, a replayed or foreign state refused."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager
from console_people import make_person
from fastapi import FastAPI
from sqlmodel import select

from adapters.simulator import create_simulator
from gateway.identity.psc_simulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    create_psc_simulator,
)
from gateway.keys.admin import create_key
from gateway.main import create_app
from gateway.settings import ProSanteConnectSettings
from gateway.storage.db import Database
from gateway.storage.models import AuditEntry, User

pytestmark = pytest.mark.anyio
ISSUER = "http://psc.test"
HERE = ("10001234565", "330001231")   # Camille Durand: an activity at the served pharmacy
ELSEWHERE = ("10009876540", "690000880")  # Julien Martin: only at another pharmacy


@pytest.fixture
def psc() -> FastAPI:
    return create_psc_simulator(ISSUER)


@pytest.fixture
async def psc_app(settings, psc) -> AsyncIterator[FastAPI]:
    configured = settings.model_copy(update={"pro_sante_connect": ProSanteConnectSettings(
        issuer=ISSUER, client_id=DEFAULT_CLIENT_ID, client_secret=DEFAULT_CLIENT_SECRET)})
    transports = {"opera": httpx.ASGITransport(create_simulator("opera")),
                  "santex": httpx.ASGITransport(create_simulator("santex")),
                  "pro_sante_connect": httpx.ASGITransport(psc)}
    application = create_app(configured, transports=transports, configure_logs=False,
                             run_workers=False)
    async with LifespanManager(application):
        create_key(configured, role="pharmacy", finess="330001231")  # a served pharmacy
        yield application


def browser(app: FastAPI, base: str = "http://gateway.test") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base)


async def psc_login(app: FastAPI, psc: FastAPI, rpps: str, http: httpx.AsyncClient,
                    *, mode: str = "ok") -> httpx.Response:
    """Click "Pro Santé Connect", pick the person on the provider's page, come back."""
    async with browser(psc, ISSUER) as provider:
        await provider.post("/_faults", json={"mode": mode})
        start = await http.get("/console/psc/start")
        assert start.status_code == 303, start.text
        authorize = urlsplit(start.headers["location"])
        assert authorize.netloc == "psc.test"
        query = parse_qs(authorize.query)
        assert query["code_challenge_method"] == ["S256"] and query["nonce"][0]
        page = await provider.get(f"{authorize.path}?{authorize.query}")
        fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', page.text))
        fields["rpps"] = rpps
        approved = await provider.post("/auth/approve", data=fields)
        back = urlsplit(approved.headers["location"])
    assert back.path == "/console/psc/callback"
    return await http.get(f"{back.path}?{back.query}")


def audit(settings) -> list[tuple[str, str | None, str]]:
    database = Database(settings.database_url)
    try:
        return database.read_now(lambda s: [(e.action, e.object_id, e.outcome)
                                            for e in s.exec(select(AuditEntry)).all()])
    finally:
        database.engine.dispose()


async def test_a_pharmacist_of_a_served_pharmacy_gets_in(psc_app, psc, settings):
    async with browser(psc_app) as http:
        answer = await psc_login(psc_app, psc, HERE[0], http)
        assert answer.status_code == 200 and 'http-equiv="refresh"' in answer.text
        page = await http.get("/console/")
        assert page.status_code == 200 and "Tableau de bord" in page.text
        assert (await http.get("/console/users")).status_code == 403
    database = Database(settings.database_url)
    users = database.read_now(lambda s: s.exec(select(User).where(User.rpps == HERE[0])).all())
    database.engine.dispose()
    assert [(u.role, u.finess, u.password_hash) for u in users] == [
        ("pharmacist", HERE[1], None)]
    assert ("console.login_psc", users[0].id, "ok") in audit(settings)
    async with browser(psc_app) as http:  # the next login finds the same account
        assert (await psc_login(psc_app, psc, HERE[0], http)).status_code == 200


async def test_a_professional_of_another_pharmacy_is_refused(psc_app, psc, settings):
    async with browser(psc_app) as http:
        answer = await psc_login(psc_app, psc, ELSEWHERE[0], http)
        assert answer.status_code == 403 and "RPPS" in answer.text
        assert (await http.get("/console/")).headers["location"] == "/console/login"
    assert ("console.login_psc", None, "refused") in audit(settings)


async def test_an_admin_link_lets_a_professional_into_the_linked_pharmacy(psc_app, psc,
                                                                         settings):
    make_person(settings, "pharmacist", finess="330001231", rpps=ELSEWHERE[0])
    async with browser(psc_app) as http:
        assert (await psc_login(psc_app, psc, ELSEWHERE[0], http)).status_code == 200
        assert (await http.get("/console/")).status_code == 200


@pytest.mark.parametrize("mode", ["tampered_id_token", "wrong_audience", "wrong_nonce",
                                  "expired_id_token", "wrong_issuer"])
async def test_an_id_token_that_does_not_verify_is_refused(psc_app, psc, mode):
    async with browser(psc_app) as http:
        answer = await psc_login(psc_app, psc, HERE[0], http, mode=mode)
        assert answer.status_code == 401 and "Pro Santé Connect" in answer.text
        assert "gw_console" not in http.cookies
        assert (await http.get("/console/")).headers["location"] == "/console/login"


async def test_a_callback_from_another_browser_is_refused(psc_app, psc):
    """Login CSRF through the provider: the attacker's code, in the victim's browser."""
    async with browser(psc_app) as attacker, browser(psc_app) as victim:
        start = await attacker.get("/console/psc/start")
        authorize = urlsplit(start.headers["location"])
        async with browser(psc, ISSUER) as provider:
            page = await provider.get(f"{authorize.path}?{authorize.query}")
            fields = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', page.text))
            approved = await provider.post("/auth/approve", data={**fields, "rpps": HERE[0]})
        back = urlsplit(approved.headers["location"])
        answer = await victim.get(f"{back.path}?{back.query}")
        assert answer.status_code == 401
        assert "gw_console" not in victim.cookies
        again = await attacker.get(f"{back.path}?state=other&code=x")
        assert again.status_code == 401


async def test_a_disabled_psc_account_stays_out(psc_app, psc, settings):
    from gateway.audit.trail import cli_actor
    from gateway.cli.users import accounts_of

    async with browser(psc_app) as http:
        await psc_login(psc_app, psc, HERE[0], http)
    database = Database(settings.database_url)
    user_id = database.read_now(lambda s: s.exec(select(User.id).where(
        User.rpps == HERE[0])).one())
    database.write_now(lambda s: accounts_of(settings).disable(s, cli_actor(), user_id))
    database.engine.dispose()
    async with browser(psc_app) as http:
        assert (await psc_login(psc_app, psc, HERE[0], http)).status_code == 403


async def test_without_configuration_the_psc_routes_do_not_exist(app):
    async with browser(app) as http:
        assert (await http.get("/console/psc/start")).status_code == 404
        assert (await http.get("/console/psc/callback?code=x&state=y")).status_code == 404
        assert "Pro Santé Connect" not in (await http.get("/console/login")).text
