"""Credentials the database alone cannot forge (issue 11): an insider who can write to the
tables but holds no key adds a key, promotes one, moves it to another pharmacy,
un-revokes it, forges a session or moves one to another person. Each opens nothing,
and each is counted in `gateway_credential_tamper_total`."""

from __future__ import annotations

import hashlib
import secrets

import httpx
import pytest
from console_people import log_in, make_person
from sqlalchemy import text

from gateway.keys.admin import create_key, revoke_key
from gateway.observability.metrics import CREDENTIAL_TAMPER
from gateway.storage.db import Database
from gateway.storage.models import utcnow

pytestmark = pytest.mark.anyio


def tamper_count(kind: str) -> float:
    return CREDENTIAL_TAMPER.labels(kind)._value.get()


def sql(settings, statement: str, **values) -> None:
    """What an insider does: plain SQL, no gateway code, no key."""
    database = Database(settings.database_url)
    try:
        database.write_now(lambda s: s.execute(text(statement), values))
    finally:
        database.engine.dispose()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_a_key_row_inserted_by_hand_opens_nothing(client, settings, app):
    secret = f"key_{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"
    key_id = secret.split(".")[0]
    for digest in (hashlib.sha256(secret.encode()).hexdigest(), "0" * 64):
        before = tamper_count("api_key")
        sql(settings, "DELETE FROM api_keys WHERE id = :id", id=key_id)
        sql(settings, "INSERT INTO api_keys (id, secret_hash, role, finess, operators, label, "
            "row_mac, created_at) VALUES (:id, :digest, 'admin', NULL, NULL, 'x', '', :now)",
            id=key_id, digest=digest, now=utcnow())
        answer = await client.get("/v1/claims", headers=bearer(secret))
        assert answer.status_code == 401
        assert tamper_count("api_key") == before + 1


@pytest.mark.parametrize(("column", "value"), [
    ("role", "admin"), ("finess", "690000880"), ("operators", "opera"),
    ("expires_at", None),
])
async def test_a_key_altered_by_hand_stops_working(client, settings, app, column, value):
    key_id, secret = create_key(settings, role="pharmacy", finess="330001231",
                                expires_days=5)
    assert (await client.get("/v1/claims", headers=bearer(secret))).status_code == 200
    before = tamper_count("api_key")
    sql(settings, f"UPDATE api_keys SET {column} = :v WHERE id = :id",  # noqa: S608
        v=value, id=key_id)
    assert (await client.get("/v1/claims", headers=bearer(secret))).status_code == 401
    assert tamper_count("api_key") == before + 1


async def test_a_revocation_cleared_by_hand_does_not_revive_the_key(client, settings, app,
                                                                   simulators):
    key_id, secret = create_key(settings, role="pharmacy", finess="330001231")
    assert revoke_key(settings, key_id)
    sql(settings, "UPDATE api_keys SET revoked_at = NULL WHERE id = :id", id=key_id)
    before = tamper_count("api_key")
    assert (await client.get("/v1/claims", headers=bearer(secret))).status_code == 401
    from synthetic import claim_body

    submitted = await client.post("/v1/claims", json=claim_body("TAMPER1"),
                                  headers=bearer(secret))
    assert submitted.status_code == 401
    assert tamper_count("api_key") >= before + 2


async def test_a_cached_key_altered_by_hand_stores_no_claim(client, settings, app, simulators):
    """Submissions take the key from a cache: the intake reads its row again with the
    claim's duplicate check, and that read checks the row's MAC too."""
    from simulator_control import ledger
    from synthetic import claim_body

    key_id, secret = create_key(settings, role="pharmacy", finess="330001231")
    stored = await client.post("/v1/claims", json=claim_body("CACHED1"), headers=bearer(secret))
    assert stored.status_code == 201
    sql(settings, "UPDATE api_keys SET role = 'admin' WHERE id = :id", id=key_id)
    before = tamper_count("api_key")
    refused = await client.post("/v1/claims", json=claim_body("CACHED2"), headers=bearer(secret))
    assert refused.status_code == 401
    assert tamper_count("api_key") == before + 1
    assert (await ledger(simulators["opera"]))["received"] == 1


def browser(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gateway.test")


async def test_a_session_row_inserted_by_hand_opens_no_console(app, settings):
    person = make_person(settings, "admin")
    token = secrets.token_urlsafe(32)
    before = tamper_count("console_session")
    now = utcnow()
    sql(settings, "INSERT INTO console_sessions (token_hash, user_id, stage, method, "
        "csrf_token, created_at, last_seen_at, row_mac) VALUES (:h, :u, 'active', 'password', "
        "'c', :now, :now, '')", h=hashlib.sha256(token.encode()).hexdigest(),
        u=person.user_id, now=now)
    async with browser(app) as http:
        http.cookies.set("gw_console", token)
        answer = await http.get("/console/audit")
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    assert tamper_count("console_session") == before + 1


async def test_a_session_moved_to_another_person_by_hand_is_refused(app, settings):
    pharmacist, admin = make_person(settings), make_person(settings, "admin")
    async with browser(app) as http:
        await log_in(http, pharmacist)
        before = tamper_count("console_session")
        sql(settings, "UPDATE console_sessions SET user_id = :admin WHERE user_id = :me",
            admin=admin.user_id, me=pharmacist.user_id)
        answer = await http.get("/console/audit")
        assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
        assert tamper_count("console_session") == before + 1


@pytest.mark.parametrize(("column", "value"), [
    ("role", "admin"), ("finess", "690000880"), ("disabled_at", None),
    ("password_hash", "$argon2id$v=19$m=65536,t=3,p=4$forged$forged"),
])
async def test_a_person_altered_by_hand_is_refused(app, settings, column, value):
    person = make_person(settings)
    if column == "disabled_at":  # the forgery: re-enable a disabled account
        from gateway.audit.trail import cli_actor
        from gateway.cli.users import accounts_of

        database = Database(settings.database_url)
        database.write_now(lambda s: accounts_of(settings).disable(
            s, cli_actor(), person.user_id))
        database.engine.dispose()
    async with browser(app) as http:
        if column != "disabled_at":
            await log_in(http, person)
        before = tamper_count("user")
        sql(settings, f"UPDATE users SET {column} = :v WHERE id = :id",  # noqa: S608
            v=value, id=person.user_id)
        if column != "disabled_at":
            answer = await http.get("/console/")
            assert answer.status_code == 303 and answer.headers["location"] == "/console/login"
    async with browser(app) as http:
        from console_people import post_password

        answer = await post_password(http, person.email, person.password)
        assert answer.status_code == 401
    assert tamper_count("user") >= before + 1


async def test_tamper_refusals_are_on_the_metrics_page(client, settings, app):
    key_id, secret = create_key(settings, role="operations")
    sql(settings, "UPDATE api_keys SET role = 'admin' WHERE id = :id", id=key_id)
    await client.get("/v1/operators", headers=bearer(secret))
    page = (await client.get("/metrics")).text
    assert 'gateway_credential_tamper_total{kind="api_key"}' in page
