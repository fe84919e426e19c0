"""Abuse resistance: rate limits trip and reset, key expiry and revocation, and the audit
of key creation and revocation. The harvesting budgets: tests/integration/test_rights_budgets.py."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import select
from synthetic import claim_body, rights_body

from gateway.keys.admin import create_key, revoke_key
from gateway.observability.metrics import REGISTRY
from gateway.security.apikeys import InvalidKeyRequest, new_key
from gateway.security.ratelimit import RateLimiter
from gateway.settings import Settings
from gateway.storage.db import Database
from gateway.storage.models import ApiKey, AuditEntry, utcnow

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key_id_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ").split(".")[0]


# --- rate limits over HTTP ------------------------------------------------------------

@pytest.fixture
def clock(app) -> FakeClock:  # type: ignore[no-untyped-def]
    """Small limits on a fake wall clock, counted in the app's shared store (the database)."""
    fake = FakeClock()
    shared = app.state.context.limiter.store
    app.state.context.limiter = RateLimiter(
        {"rights": 2, "claims": 2, "receipts": 60, "reads": 600}, shared, clock=fake)
    return fake


async def test_rights_limit_trips_with_retry_after_and_resets(client, pharmacy, clock):
    for _ in range(2):
        assert (await client.post("/v1/rights", json=rights_body(),
                                  headers=pharmacy)).status_code == 200
    clock.now += 20
    limited = await client.post("/v1/rights", json=rights_body(), headers=pharmacy)
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("application/problem+json")
    # until the 5 s slot of the oldest request, [1000, 1005), is a minute old
    assert limited.headers["Retry-After"] == "45"
    assert "185077511512396" not in limited.text  # no personal data echoed
    clock.now += 44
    assert (await client.post("/v1/rights", json=rights_body(),
                              headers=pharmacy)).status_code == 429
    clock.now += 1
    assert (await client.post("/v1/rights", json=rights_body(),
                              headers=pharmacy)).status_code == 200


async def test_claims_limit_is_per_key_and_per_class(client, pharmacy, other_pharmacy, clock):
    for number in ("L1", "L2"):
        assert (await client.post("/v1/claims", json=claim_body(number),
                                  headers=pharmacy)).status_code in (201, 202)
    limited = await client.post("/v1/claims", json=claim_body("L3"), headers=pharmacy)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) == 65
    # the rights budget of the same key, and the claims budget of another key, are untouched
    assert (await client.post("/v1/rights", json=rights_body(),
                              headers=pharmacy)).status_code == 200
    other = claim_body("L1", finess="690000880")
    assert (await client.post("/v1/claims", json=other,
                              headers=other_pharmacy)).status_code in (201, 202)
    clock.now += 64
    assert (await client.post("/v1/claims", json=claim_body("L3"),
                              headers=pharmacy)).status_code == 429
    clock.now += 1
    assert (await client.post("/v1/claims", json=claim_body("L3"),
                              headers=pharmacy)).status_code in (201, 202)


async def test_refusals_are_counted_by_endpoint_class(client, pharmacy, clock):
    def refused() -> float:
        return REGISTRY.get_sample_value("gateway_rate_limited_total",
                                         {"endpoint_class": "rights"}) or 0.0

    before = refused()
    for _ in range(3):
        await client.post("/v1/rights", json=rights_body(), headers=pharmacy)
    assert refused() == before + 1
    assert re.search(r'^gateway_rate_limited_total\{endpoint_class="rights"\}',
                     (await client.get("/metrics")).text, re.MULTILINE)


async def test_the_limiter_forgets_quiet_callers() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"receipts": 5}, clock=clock, max_tracked=100)
    for address in range(100):
        assert await limiter.check(f"10.0.0.{address}", "receipts") is None
    clock.now += 64  # their slot, [1000, 1005), is still in the window
    assert await limiter.check("10.0.1.0", "receipts") is None
    assert limiter.tracked() == 101
    clock.now += 2
    assert await limiter.check("10.0.1.1", "receipts") is None
    assert limiter.tracked() == 2


# --- key lifecycle --------------------------------------------------------------------

def audit_entries(settings: Settings) -> list[AuditEntry]:
    database = Database(settings.database_url)
    try:
        return database.read_now(lambda s: list(s.exec(select(AuditEntry)).all()))
    finally:
        database.engine.dispose()


async def test_an_expired_key_is_refused(client, settings, app):
    row, secret = new_key(role="pharmacy", finess="330001231",
                          credentials=app.state.context.credentials,
                          expires_at=utcnow() - timedelta(seconds=1))
    await app.state.context.db.write(lambda s: s.add(row))
    response = await client.get("/v1/claims", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_a_key_with_an_expiry_works_until_then(client, settings, app):
    key_id, secret = create_key(settings, role="pharmacy", finess="330001231", expires_days=30)
    row = await app.state.context.db.read(lambda s: s.get(ApiKey, key_id))
    assert row is not None and row.expires_at is not None
    left = row.expires_at - utcnow()
    assert timedelta(days=29, hours=23) < left <= timedelta(days=30)
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/v1/claims", headers=headers)).status_code == 200


def test_an_expiry_must_be_at_least_a_day(settings):
    with pytest.raises(InvalidKeyRequest, match="--expires-days"):
        create_key(settings, role="pharmacy", finess="330001231", expires_days=0)


async def test_key_creation_and_revocation_are_audited(client, settings, app):
    key_id, secret = create_key(settings, role="pharmacy", finess="330001231", expires_days=7)
    assert revoke_key(settings, key_id)
    assert not revoke_key(settings, "key_doesnotexist")
    response = await client.get("/v1/claims", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 401  # at once
    entries = {(e.action, e.object_id): e for e in audit_entries(settings)}
    created = entries[("key.create", key_id)]
    assert created.actor.startswith("cli:") and created.role == "admin"
    assert '"finess": "330001231"' in created.details_json and secret not in created.details_json
    assert entries[("key.revoke", key_id)].outcome == "ok"
    assert entries[("key.revoke", "key_doesnotexist")].outcome == "unknown_key"
