"""Retention: exactly the old settled claims lose their personal data; queued ones never do.

Then the data keys nobody uses any more are shredded, and `gateway purge` does the
same from the shell.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from datetime import timedelta

import pytest
from simulator_control import set_fault
from sqlalchemy import create_engine, text, update
from sqlmodel import col, select
from synthetic import OTHER_FINESS, PEOPLE, claim_body, rights_body
from typer.testing import CliRunner

from gateway.claims.payload import payload_context
from gateway.cli.security import security_app
from gateway.security.crypto import Cipher, DecryptionError
from gateway.security.envelope import DataKeyStore, master_kid
from gateway.security.keyring import KeyRing, load_keyring
from gateway.storage.db import is_sqlite, sync_url
from gateway.storage.models import AuditEntry, Claim, DataKey, RightsCacheEntry, utcnow
from gateway.storage.retention import purge, purge_once, run_retention, wipe_wal

pytestmark = pytest.mark.anyio
FAST = {"timeout_s": 0.2, "deadline_s": 0.4, "breaker_fail_max": 3, "breaker_reset_s": 0.3,
        "breaker_reset_max_s": 0.6, "probe_interval_s": 0.2, "drain_per_s": 200,
        "drain_ramp_s": 0}
PURGED_HISTORY = "personal data purged (retention)"


def raw_database_text(url: str) -> str:
    """What the database holds: the bytes on disk (SQLite, with its log) or every row."""
    if is_sqlite(url):
        path = url.removeprefix("sqlite:///")
        data = b"".join(open(path + suffix, "rb").read() for suffix in ("", "-wal")
                        if os.path.exists(path + suffix))
        return data.decode("latin-1")
    engine = create_engine(sync_url(url))
    with engine.connect() as connection:
        rows = [str(r) for table in ("claims", "claim_history", "rights_cache", "receipts")
                for r in connection.execute(text(f"SELECT * FROM {table}"))]  # noqa: S608
    engine.dispose()
    return "\n".join(rows)


@pytest.fixture
def settings(settings):
    """Fast operators, so a queued claim drains within the test."""
    return settings.model_copy(update={
        "operators": [op.model_copy(update=FAST) for op in settings.operators]})


async def submit(client, headers, invoice, expect, **body):
    response = await client.post("/v1/claims", json=claim_body(invoice, **body), headers=headers)
    assert response.status_code == expect, response.text
    return response.json()["id"]


def row(ctx, claim_id):
    return ctx.db.read_now(lambda s: s.get(Claim, claim_id))


def age(session, claim_ids, days):
    session.execute(update(Claim).where(col(Claim.id).in_(claim_ids))
                    .values(updated_at=utcnow() - timedelta(days=days)))


def nir_of(ctx, claim):
    return ctx.cipher.decrypt_json(claim.payload_enc,
                                   context=payload_context(claim.id))["beneficiary"]["nir"]


async def wait_for_status(client, headers, claim_id, status):
    for _ in range(200):
        if (await client.get(f"/v1/claims/{claim_id}", headers=headers)).json()["status"] == status:
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.workers
async def test_purge_removes_exactly_old_settled_claims_and_keeps_queued_ones(
        app, client, pharmacy, settings, simulators):
    ctx = app.state.context
    accepted_old = await submit(client, pharmacy, "A1", 201, person=1)
    rejected_old = await submit(client, pharmacy, "R1", 201, person=2, member_number="REJ1")
    cancelled_old = await submit(client, pharmacy, "C1", 201, person=1)
    cancel = await client.post(f"/v1/claims/{cancelled_old}/cancel", headers=pharmacy)
    assert cancel.json()["status"] == "cancelled"
    accepted_new = await submit(client, pharmacy, "A2", 201, person=0)
    assert (await client.post("/v1/rights", json=rights_body(person=0),
                              headers=pharmacy)).status_code == 200
    await set_fault(simulators["opera"], "down")
    queued_old = await submit(client, pharmacy, "Q1", 202, person=0)
    old = [accepted_old, rejected_old, cancelled_old]
    before = {claim_id: row(ctx, claim_id) for claim_id in [*old, accepted_new, queued_old]}
    assert all(claim.data_key_id for claim in before.values())

    def age_then_purge(session):
        age(session, [*old, queued_old], days=settings.retention_days + 1)
        session.execute(update(RightsCacheEntry).values(as_of=utcnow() - timedelta(days=31)))
        return purge(session, now=utcnow(), retention_days=settings.retention_days,
                     rights_cache_days=settings.provisional.rights_cache_days)

    report = await ctx.db.write(age_then_purge)
    wipe_wal(ctx.db)
    assert report.counts() == {"claims": 3, "rights_cache": 1, "data_keys": 0}
    for claim_id in old:
        claim, was = row(ctx, claim_id), before[claim_id]
        assert claim.purged_at is not None and claim.payload_enc == b""
        assert claim.nir_hash == claim.beneficiary_hash == claim.request_hash == ""
        assert (claim.status, claim.amc_requested_cents, claim.amc_covered_cents,
                claim.operator, claim.invoice_number, claim.created_at) == (
            was.status, was.amc_requested_cents, was.amc_covered_cents, was.operator,
            was.invoice_number, was.created_at)
        with pytest.raises(DecryptionError):
            nir_of(ctx, claim)
        view = (await client.get(f"/v1/claims/{claim_id}", headers=pharmacy)).json()
        assert view["nir_masked"] == "—" and view["status"] == was.status
        assert view["history"][-1]["detail"] == PURGED_HISTORY
    for claim_id, person in ((accepted_new, 0), (queued_old, 0)):
        claim = row(ctx, claim_id)
        assert claim.purged_at is None and nir_of(ctx, claim) == PEOPLE[person]["nir"]
        view = (await client.get(f"/v1/claims/{claim_id}", headers=pharmacy)).json()
        assert view["nir_masked"] == PEOPLE[person]["nir"][:5] + "*" * 10
    assert ctx.db.read_now(lambda s: s.exec(select(RightsCacheEntry)).all()) == []

    at_rest = raw_database_text(settings.database_url)
    assert accepted_new in at_rest  # the scan does read the data
    for person in (PEOPLE[1], PEOPLE[2]):
        assert person["nir"] not in at_rest
        assert ctx.cipher.index("nir", person["nir"]) not in at_rest
        assert ctx.cipher.index("beneficiary", person["nir"], person["birth_date"],
                                str(person["birth_rank"])) not in at_rest
    assert before[queued_old].nir_hash in at_rest  # the live claim keeps its keyed hash

    await set_fault(simulators["opera"], "ok")
    assert await wait_for_status(client, pharmacy, queued_old, "accepted")


async def test_data_keys_without_live_records_are_shredded_once_their_month_is_over(
        app, client, pharmacy, other_pharmacy, simulators):
    ctx = app.state.context
    ours = await submit(client, pharmacy, "S1", 201, person=0)
    theirs = await submit(client, other_pharmacy, "S2", 201, person=2, finess=OTHER_FINESS)
    assert (await client.post("/v1/rights", json=rights_body(person=0),
                              headers=pharmacy)).status_code == 200
    await set_fault(simulators["opera"], "down")
    queued = await submit(client, pharmacy, "S3", 202, person=1)
    their_blob = row(ctx, theirs).payload_enc  # as a backup would have kept it

    report = await purge_once(ctx, now=utcnow() + timedelta(days=500))

    assert (report.claims, report.rights_cache, report.data_keys) == (2, 1, 2)
    keys = {k.scope.rsplit(":", 1)[0]: k for k in ctx.db.read_now(
        lambda s: s.exec(select(DataKey)).all())}
    assert keys["claims:330001231"].wrapped is not None  # the queued claim still needs it
    for scope in (f"claims:{OTHER_FINESS}", "rights"):
        assert keys[scope].wrapped is None and keys[scope].shredded_at is not None
    with pytest.raises(DecryptionError, match="shredded"):
        ctx.cipher.decrypt(their_blob, context=payload_context(theirs))
    assert nir_of(ctx, row(ctx, queued)) == PEOPLE[1]["nir"]
    assert row(ctx, ours).purged_at is not None
    entry = ctx.db.read_now(lambda s: s.exec(
        select(AuditEntry).where(AuditEntry.action == "retention.purge")).one())
    assert (entry.actor, json.loads(entry.details_json)) == (
        "system", {"claims": 2, "rights_cache": 1, "data_keys": 2})


def write_config(tmp_path, settings, **security):
    lines = ['environment = "development"', f'database_url = "{settings.database_url}"',
             f'data_dir = "{settings.data_dir}"', "[security]"]
    lines += [f"{name} = {json.dumps(value)}" for name, value in security.items()]
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def test_gateway_purge_applies_the_policy_and_prints_the_counts(
        app, client, pharmacy, settings, tmp_path):
    ctx = app.state.context
    old = [await submit(client, pharmacy, f"K{n}", 201, person=n) for n in range(2)]
    recent = await submit(client, pharmacy, "K9", 201, person=2)
    await ctx.db.write(lambda s: age(s, old, days=settings.retention_days + 1))
    config = write_config(tmp_path, settings)
    runner = CliRunner()

    dry = runner.invoke(security_app, ["purge", "--config", config, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would purge: claims=2 rights_cache=0 data_keys_shredded=0" in dry.output
    assert row(ctx, old[0]).purged_at is None

    done = runner.invoke(security_app, ["purge", "--config", config])
    assert done.exit_code == 0, done.output
    assert "purged: claims=2 rights_cache=0 data_keys_shredded=0" in done.output
    assert [row(ctx, i).purged_at is not None for i in (*old, recent)] == [True, True, False]
    entries = ctx.db.read_now(lambda s: s.exec(
        select(AuditEntry).where(AuditEntry.action == "retention.purge")).all())
    assert len(entries) == 1 and entries[0].actor.startswith("cli:")
    assert json.loads(entries[0].details_json)["claims"] == 2


async def test_gateway_keys_rotate_data_key_rewraps_under_the_new_master(
        app, client, pharmacy, settings, tmp_path):
    ctx = app.state.context
    claim_id = await submit(client, pharmacy, "M1", 201, person=0)
    old = load_keyring(settings)
    new_key = bytes(range(32))
    config = write_config(tmp_path, settings, data_key=base64.b64encode(new_key).decode(),
                          previous_data_keys=[base64.b64encode(old.data_key).decode()])

    result = CliRunner().invoke(security_app, ["rotate-data-key", "--config", config])

    assert result.exit_code == 0, result.output
    assert f"re-wrapped 1 data key(s) under master key {master_kid(new_key)}" in result.output
    keys = ctx.db.read_now(lambda s: s.exec(select(DataKey)).all())
    assert [k.master_kid for k in keys] == [master_kid(new_key)]
    new_only = KeyRing(new_key, (), old.index_key, old.signing_key)
    fresh = Cipher(new_only, DataKeyStore(ctx.db, new_only))
    assert fresh.decrypt_json(row(ctx, claim_id).payload_enc, context=payload_context(
        claim_id))["beneficiary"]["nir"] == PEOPLE[0]["nir"]
    entry = ctx.db.read_now(lambda s: s.exec(
        select(AuditEntry).where(AuditEntry.action == "keys.rotate_data_key")).one())
    assert json.loads(entry.details_json)["count"] == 1


async def test_the_scheduled_job_survives_a_failed_run(app, monkeypatch):
    runs: list[int] = []

    async def flaky(ctx, **_):
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("database away")
        if len(runs) == 3:
            stopping.set()

    monkeypatch.setattr("gateway.storage.retention.purge_once", flaky)
    stopping = asyncio.Event()
    await asyncio.wait_for(run_retention(app.state.context, stopping, first_run_s=0.01,
                                         every_s=0.01), 5)
    assert len(runs) == 3


async def test_the_scheduled_purge_searches_in_a_read_and_purges_what_still_qualifies(
        app, client, pharmacy, settings, monkeypatch):
    """The search reads every settled claim ever kept: in the write it held up every
    claim's intake meanwhile. It runs in a read; the write then purges each claim found
    only if it still qualifies (here one has a cancellation to send since)."""
    from gateway.storage import retention

    ctx = app.state.context
    ids = [await submit(client, pharmacy, f"S{i}", 201, person=i) for i in range(3)]
    ctx.db.write_now(lambda session: age(session, ids, days=settings.retention_days + 1))
    searched: list[object] = []
    search = retention.purge_candidates

    def search_then_cancel(session, *, cutoff):
        found = search(session, cutoff=cutoff)
        searched.append(session.connection().get_execution_options().get("sqlite_begin"))
        ctx.db.write_now(lambda s: s.execute(update(Claim).where(col(Claim.id) == ids[0])
                                             .values(cancellation_pending=True)))
        return found

    monkeypatch.setattr(retention, "purge_candidates", search_then_cancel)
    report = await purge_once(ctx)
    assert searched == ["DEFERRED"]  # the reader's transaction, not the writer's
    assert report.claims == 2
    assert row(ctx, ids[0]).purged_at is None and row(ctx, ids[0]).nir_hash
    assert all(row(ctx, claim_id).purged_at is not None for claim_id in ids[1:])
