"""Rights budgets (issue 12): distinct people per key and per pharmacy, per hour and per
day, counted in the database and so shared by every instance; over one, 429 and the key
suspended (403 `key-suspended` everywhere) until operations lift it by the CLI, the API
or the console."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from console_people import log_in, make_person
from simulator_control import ledger
from sqlalchemy import text
from sqlmodel import select
from synthetic import OTHER_FINESS, claim_body, nir_with_key, rights_body
from typer.testing import CliRunner

from gateway.cli.main import app as cli
from gateway.identity.credentials import CredentialKeys
from gateway.keys.admin import create_key, lift_key, list_key_lines
from gateway.main import create_app
from gateway.observability.metrics import REGISTRY
from gateway.security import abuse
from gateway.security.apikeys import Principal
from gateway.security.keyring import load_credential_key
from gateway.storage.db import Database
from gateway.storage.models import ApiKey, AuditEntry, RightsLookup

pytestmark = pytest.mark.anyio
FINESS = "330001231"


def person(i: int) -> dict[str, object]:
    """Synthetic person number i: born in July 1985, a valid NIR key; nobody real."""
    body = rights_body()
    body["beneficiary"] = {**body["beneficiary"], "nir": nir_with_key(f"185077511{i:04d}")}
    return body


def budgets(settings, **limits):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"limits": settings.limits.model_copy(update=limits)})


@asynccontextmanager
async def instances(settings, simulators, count: int = 2) -> AsyncIterator[list[httpx.AsyncClient]]:
    """`count` gateways on one database, each with its own in-process state (key cache,
    rate limiter, engine): what two `gateway serve` processes share is the database."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            app = create_app(settings, configure_logs=False, run_workers=False,
                             transports={n: httpx.ASGITransport(s) for n, s in simulators.items()})
            await stack.enter_async_context(LifespanManager(app))
            clients.append(await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app), base_url="http://gateway.test")))
        yield clients


def key(settings, finess: str = FINESS) -> tuple[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    key_id, secret = create_key(settings, role="pharmacy", finess=finess)
    return key_id, {"Authorization": f"Bearer {secret}"}


def exceeded(scope: str) -> float:
    return REGISTRY.get_sample_value("gateway_rights_budget_exceeded_total",
                                     {"scope": scope}) or 0.0


def read(settings, work):  # type: ignore[no-untyped-def]
    database = Database(settings.database_url)
    try:
        return database.read_now(work)
    finally:
        database.engine.dispose()


def audit(settings) -> list[AuditEntry]:  # type: ignore[no-untyped-def]
    return read(settings, lambda s: list(s.exec(select(AuditEntry)).all()))


def assert_suspended(answer: httpx.Response) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["type"] == "key-suspended"


async def test_two_instances_share_one_budget_and_the_suspension(settings, simulators):
    limited = budgets(settings, rights_people_per_key_per_hour=3)
    key_id, headers = key(limited)
    async with instances(limited, simulators) as (first, second):
        # a claim on the second instance puts the key in that instance's key cache
        assert (await second.post("/v1/claims", json=claim_body("B1"),
                                  headers=headers)).status_code == 201
        for i in range(3):
            answer = await first.post("/v1/rights", json=person(i), headers=headers)
            assert answer.status_code == 200, answer.text
        for i in range(3):  # the same people again, on the other instance: nothing new
            assert (await second.post("/v1/rights", json=person(i),
                                      headers=headers)).status_code == 200
        sent = (await ledger(simulators["opera"]))["rights"]
        before = exceeded("key")
        refused = await second.post("/v1/rights", json=person(3), headers=headers)
        assert refused.status_code == 429, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.json()["type"] == "rights-budget-exceeded"
        assert 1 <= int(refused.headers["Retry-After"]) <= 3600
        assert str(person(3)["beneficiary"]["nir"]) not in refused.text
        assert (await ledger(simulators["opera"]))["rights"] == sent  # nothing sent
        assert exceeded("key") == before + 1
        # suspended on both instances, on every route, the cached key included
        for client in (first, second):
            assert_suspended(await client.post("/v1/rights", json=person(0), headers=headers))
            assert_suspended(await client.get("/v1/claims", headers=headers))
        assert_suspended(await second.post("/v1/claims", json=claim_body("B2"),
                                           headers=headers))
        metrics = (await first.get("/metrics")).text
        assert key_id not in metrics and 'key_id="' not in metrics
        assert 'gateway_rights_budget_exceeded_total{scope="key"}' in metrics
    row = read(limited, lambda s: s.get(ApiKey, key_id))
    assert row.suspended_at is not None and "3 people in an hour" in row.suspension_reason
    entries = [(e.action, e.actor, e.object_id, e.outcome) for e in audit(limited)]
    assert ("key.suspend", "system", key_id, "ok") in entries
    assert ("rights.lookup", key_id, "opera", "over_budget") in entries
    assert [e for e in entries if e[0] == "rights.lookup"][:3] == [
        ("rights.lookup", key_id, "opera", "operator")] * 3


async def test_the_pharmacy_budget_counts_all_its_keys(settings, simulators):
    limited = budgets(settings, rights_people_per_pharmacy_per_hour=3)
    one_id, one = key(limited)
    two_id, two = key(limited)
    _, elsewhere = key(limited, OTHER_FINESS)
    async with instances(limited, simulators) as (first, second):
        for i in range(2):
            assert (await first.post("/v1/rights", json=person(i),
                                     headers=one)).status_code == 200
        # person 0 is already counted for the pharmacy: it costs the second key nothing
        assert (await second.post("/v1/rights", json=person(0), headers=two)).status_code == 200
        assert (await second.post("/v1/rights", json=person(2), headers=two)).status_code == 200
        before = exceeded("pharmacy")
        refused = await second.post("/v1/rights", json=person(3), headers=two)
        assert refused.status_code == 429 and refused.json()["type"] == "rights-budget-exceeded"
        assert exceeded("pharmacy") == before + 1
        assert_suspended(await first.get("/v1/claims", headers=two))
        # the first key still looks up the people already counted; another pharmacy is free
        assert (await first.post("/v1/rights", json=person(1), headers=one)).status_code == 200
        assert (await first.post("/v1/rights", json=person(3),
                                 headers=elsewhere)).status_code == 200
        # the pharmacy hears of it through its other key
        events = (await first.get("/v1/events", headers=one)).json()["events"]
        assert [e["type"] for e in events] == ["key.suspended"]
    assert read(limited, lambda s: s.get(ApiKey, one_id)).suspended_at is None
    assert read(limited, lambda s: s.get(ApiKey, two_id)).suspended_at is not None
    assert "pharmacy" in read(limited, lambda s: s.get(ApiKey, two_id)).suspension_reason


async def test_parallel_lookups_never_pass_the_budget(settings, simulators):
    limited = budgets(settings, rights_people_per_key_per_hour=5)
    _, headers = key(limited)
    async with instances(limited, simulators) as clients:
        answers = await asyncio.gather(*(
            clients[i % 2].post("/v1/rights", json=person(i), headers=headers)
            for i in range(12)))
    codes = sorted(a.status_code for a in answers)
    assert codes.count(200) == 5, codes
    assert set(codes[5:]) <= {403, 429} and 429 in codes


async def test_a_lift_by_the_api_restores_the_key_and_its_budgets(settings, simulators,
                                                                  operations):
    limited = budgets(settings, rights_people_per_key_per_hour=1)
    key_id, headers = key(limited)
    async with instances(limited, simulators, count=1) as (http,):
        assert (await http.post("/v1/rights", json=person(0), headers=headers)).status_code == 200
        assert (await http.post("/v1/rights", json=person(1), headers=headers)).status_code == 429
        assert (await http.post(f"/v1/keys/{key_id}/lift",
                                headers=headers)).status_code == 403  # not by itself
        _, other_pharmacy = key(limited)
        assert (await http.post(f"/v1/keys/{key_id}/lift",
                                headers=other_pharmacy)).status_code == 403
        lifted = await http.post(f"/v1/keys/{key_id}/lift", headers=operations)
        assert lifted.status_code == 200, lifted.text
        assert lifted.json() == {"id": key_id, "role": "pharmacy", "finess": FINESS,
                                 "suspended": False, "suspended_at": None,
                                 "suspension_reason": None}
        # working again, with its hour afresh: one new person, not two
        assert (await http.post("/v1/rights", json=person(1), headers=headers)).status_code == 200
        assert (await http.post("/v1/rights", json=person(2), headers=headers)).status_code == 429
        unknown = await http.post("/v1/keys/key_0000000000000000/lift", headers=operations)
        assert unknown.status_code == 404 and unknown.json()["type"] == "not-found"
        again = await http.post(f"/v1/keys/{key_id}/lift", headers=operations)
        assert again.status_code == 200 and again.json()["suspended"] is False
    ops_key = operations["Authorization"].removeprefix("Bearer ").split(".")[0]
    entries = [(e.action, e.actor, e.object_id, e.outcome) for e in audit(limited)]
    assert ("key.lift", ops_key, key_id, "ok") in entries
    assert ("key.lift", ops_key, "key_0000000000000000", "unknown_key") in entries


async def test_a_lift_by_the_cli(settings, simulators, tmp_path: Path):
    limited = budgets(settings, rights_people_per_key_per_day=1)
    key_id, headers = key(limited)
    async with instances(limited, simulators, count=1) as (http,):
        await http.post("/v1/rights", json=person(0), headers=headers)
        assert (await http.post("/v1/rights", json=person(1), headers=headers)).status_code == 429
        line = next(line for line in list_key_lines(limited) if line.startswith(key_id))
        since, reason = line.split("\t")[6:8]
        assert since != "-" and reason == "rights budget: more than 1 people in a day with this key"
        config = tmp_path / "gateway.toml"
        config.write_text(f'environment = "development"\ndatabase_url = '
                          f'"{limited.database_url}"\ndata_dir = "{limited.data_dir}"\n')
        done = CliRunner().invoke(cli, ["keys", "lift", key_id, "--config", str(config)])
        assert done.exit_code == 0, done.output
        assert done.output.strip() == f"lifted {key_id}"
        assert (await http.post("/v1/rights", json=person(1), headers=headers)).status_code == 200
        again = CliRunner().invoke(cli, ["keys", "lift", key_id, "--config", str(config)])
        assert again.output.strip() == f"{key_id} was not suspended"
        unknown = CliRunner().invoke(cli, ["keys", "lift", "key_0000000000000000",
                                           "--config", str(config)])
        assert unknown.exit_code == 1
    assert lift_key(limited, "key_0000000000000000") is None
    assert [e.actor for e in audit(limited) if e.action == "key.lift"][0].startswith("cli:")
    assert next(line for line in list_key_lines(limited)
                if line.startswith(key_id)).split("\t")[6:8] == ["-", "-"]


async def test_a_lift_from_the_console(settings, simulators):
    limited = budgets(settings, rights_people_per_key_per_hour=1)
    key_id, headers = key(limited)
    staff = make_person(limited, "operations", operators=["santex"])  # any operator scope
    async with instances(limited, simulators, count=1) as (http,):
        await http.post("/v1/rights", json=person(0), headers=headers)
        assert (await http.post("/v1/rights", json=person(1), headers=headers)).status_code == 429
        assert (await log_in(http, staff)).status_code == 303
        board = (await http.get("/console/operations")).text
        section = re.search(r'<section class="suspended-keys".*?</section>', board, re.S).group(0)
        assert "Clés suspendues" in section and key_id in section and FINESS in section
        assert f'action="/console/keys/{key_id}/lift" class="lift"' in section
        token = re.search(r'name="csrf_token" value="([^"]+)"', section).group(1)
        forged = await http.post(f"/console/keys/{key_id}/lift", data={"csrf_token": "x"})
        assert forged.status_code == 403
        assert_suspended(await http.get("/v1/claims", headers=headers))
        lifted = await http.post(f"/console/keys/{key_id}/lift", data={"csrf_token": token},
                                 follow_redirects=True)
        assert "Suspension de la clé levée" in lifted.text
        assert "Aucune clé suspendue." in lifted.text
        assert (await http.get("/v1/claims", headers=headers)).status_code == 200
        missing = await http.post("/console/keys/key_0000000000000000/lift",
                                  data={"csrf_token": token})
        assert missing.status_code == 404
    assert ("key.lift", staff.user_id, key_id, "ok") in [
        (e.action, e.actor, e.object_id, e.outcome) for e in audit(limited)]


async def test_a_suspension_cleared_by_hand_opens_nothing(settings, simulators):
    limited = budgets(settings, rights_people_per_key_per_hour=1)
    key_id, headers = key(limited)
    async with instances(limited, simulators, count=1) as (http,):
        await http.post("/v1/rights", json=person(0), headers=headers)
        await http.post("/v1/rights", json=person(1), headers=headers)
        database = Database(limited.database_url)
        database.write_now(lambda s: s.execute(text(
            "UPDATE api_keys SET suspended_at = NULL, suspension_reason = NULL "
            "WHERE id = :id"), {"id": key_id}))
        database.engine.dispose()
        assert (await http.get("/v1/claims", headers=headers)).status_code == 401


def test_days_gone_are_forgotten_at_a_keys_first_new_person_of_the_hour(settings):
    database = Database(settings.database_url)
    credentials = CredentialKeys(load_credential_key(settings))
    from gateway.audit.trail import AuditLog

    audit_log = AuditLog.from_settings(settings)
    key_id, _ = create_key(settings, role="pharmacy", finess=FINESS)
    principal = Principal(key_id=key_id, role="pharmacy", finess=FINESS, operators=None)
    yesterday = datetime(2026, 12, 3, 23, 30, tzinfo=UTC)

    def admit(subject: str, now: datetime):  # type: ignore[no-untyped-def]
        return database.write_now(lambda s: abuse.admit(
            s, principal=principal, subject=subject, limits=settings.limits,
            credentials=credentials, audit_log=audit_log, now=now))

    try:
        assert admit("a" * 64, yesterday) is None
        assert admit("a" * 64, yesterday + timedelta(minutes=5)) is None  # nothing new
        periods = sorted(database.read_now(lambda s: [
            r.period for r in s.exec(select(RightsLookup)).all()]))
        assert periods == ["2026-12-03", "2026-12-03", "2026-12-03T23", "2026-12-03T23"]
        assert admit("b" * 64, yesterday + timedelta(hours=1)) is None
        rows = database.read_now(lambda s: sorted(
            (r.scope, r.period) for r in s.exec(select(RightsLookup)).all()))
        assert rows == sorted([(f"key:{key_id}", "2026-12-04"), (f"key:{key_id}", "2026-12-04T00"),
                               (f"finess:{FINESS}", "2026-12-04"),
                               (f"finess:{FINESS}", "2026-12-04T00")])
    finally:
        database.engine.dispose()


def test_budgets_are_settings_sized_for_a_busy_pharmacy() -> None:
    from gateway.settings import LimitsSettings, Settings

    limits = Settings().limits
    assert (limits.rights_people_per_key_per_hour, limits.rights_people_per_key_per_day,
            limits.rights_people_per_pharmacy_per_hour,
            limits.rights_people_per_pharmacy_per_day) == (100, 400, 150, 600)
    assert "rights_distinct_per_hour" not in LimitsSettings.model_fields
