"""Abuse resistance: rate limits trip and reset, the harvesting detector, key expiry and
revocation, and the audit of key creation and revocation."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import select
from structlog.testing import capture_logs
from synthetic import claim_body, rights_body

from gateway.db import Database
from gateway.keys_admin import create_key, revoke_key
from gateway.metrics import REGISTRY
from gateway.models import ApiKey, AuditEntry, utcnow
from gateway.security.abuse import LookupWatch
from gateway.security.apikeys import InvalidKeyRequest, new_key
from gateway.security.ratelimit import RateLimiter
from gateway.settings import Settings

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unusual_count(key_id: str) -> float:
    return REGISTRY.get_sample_value("gateway_rights_unusual_total", {"key_id": key_id}) or 0.0


def key_id_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ").split(".")[0]


# --- rate limits over HTTP ------------------------------------------------------------

@pytest.fixture
def clock(app) -> FakeClock:  # type: ignore[no-untyped-def]
    fake = FakeClock()
    app.state.context.limiter = RateLimiter({"rights": 2, "claims": 2, "receipts": 60},
                                            clock=fake)
    return fake


async def test_rights_limit_trips_with_retry_after_and_resets(client, pharmacy, clock):
    for _ in range(2):
        assert (await client.post("/v1/rights", json=rights_body(),
                                  headers=pharmacy)).status_code == 200
    clock.now += 20
    limited = await client.post("/v1/rights", json=rights_body(), headers=pharmacy)
    assert limited.status_code == 429
    assert limited.headers["content-type"].startswith("application/problem+json")
    assert limited.headers["Retry-After"] == "40"  # until the oldest request is a minute old
    assert "185077511512396" not in limited.text  # no personal data echoed
    clock.now += 39
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
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) == 60
    # the rights budget of the same key, and the claims budget of another key, are untouched
    assert (await client.post("/v1/rights", json=rights_body(),
                              headers=pharmacy)).status_code == 200
    other = claim_body("L1", finess="690000880")
    assert (await client.post("/v1/claims", json=other,
                              headers=other_pharmacy)).status_code in (201, 202)
    clock.now += 60
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


def test_the_limiter_forgets_quiet_callers() -> None:
    clock = FakeClock()
    limiter = RateLimiter({"receipts": 5}, clock=clock, max_tracked=100)
    for address in range(100):
        assert limiter.check(f"10.0.0.{address}", "receipts") is None
    clock.now += 61
    assert limiter.check("10.0.1.1", "receipts") is None
    assert limiter.tracked() == 1


# --- the harvesting detector ----------------------------------------------------------

def test_a_few_people_an_hour_is_normal() -> None:
    watch = LookupWatch(3, clock=FakeClock())
    for person in ("a", "b", "c", "a", "b", "c", "a"):
        assert watch.note_rights_lookup("key_normal", person) is False
    assert watch.distinct("key_normal") == 3
    assert unusual_count("key_normal") == 0


def test_many_distinct_people_from_one_key_is_flagged_with_ids_only() -> None:
    clock = FakeClock()
    watch = LookupWatch(3, clock=clock)
    before = unusual_count("key_harvest")
    with capture_logs() as logs:
        flags = [watch.note_rights_lookup("key_harvest", f"hash-{i:04d}") for i in range(6)]
        assert watch.note_rights_lookup("key_quiet", "hash-0000") is False  # its own window
    assert flags == [False, False, False, True, True, True]
    assert unusual_count("key_harvest") == before + 3
    warnings = [e for e in logs if e["event"] == "rights.unusual_volume"]
    assert len(warnings) == 1  # once per episode, not once per lookup
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["key_id"] == "key_harvest"
    assert warnings[0]["distinct_beneficiaries"] == 4
    assert not any("hash-" in str(value) for value in warnings[0].values())


def test_the_window_slides_and_the_alarm_rearms() -> None:
    clock = FakeClock()
    watch = LookupWatch(2, clock=clock)
    for person in ("a", "b"):
        watch.note_rights_lookup("key_slide", person)
    clock.now += 1800
    assert watch.note_rights_lookup("key_slide", "c") is True  # a, b, c within the hour
    clock.now += 1801  # a and b are more than an hour old
    assert watch.note_rights_lookup("key_slide", "d") is False
    assert watch.distinct("key_slide") == 2
    with capture_logs() as logs:
        assert watch.note_rights_lookup("key_slide", "e") is True
    assert [e["event"] for e in logs] == ["rights.unusual_volume"]  # a new episode


def test_the_detector_memory_is_bounded() -> None:
    watch = LookupWatch(10, clock=FakeClock(), max_keys=50)
    for i in range(5000):
        watch.note_rights_lookup("key_big", f"h{i}")
    assert watch.distinct("key_big") == 256  # capped: the count means "at least"
    for key in range(200):
        watch.note_rights_lookup(f"key_{key}", "h")
    assert len(watch._keys) == 50


def test_the_threshold_is_a_setting() -> None:
    assert Settings().limits.rights_distinct_per_hour == 60
    assert Settings(limits={"rights_distinct_per_hour": 5}).limits.rights_distinct_per_hour == 5


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
