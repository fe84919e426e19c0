"""`gateway keys rotate-data-key --reencrypt`: every record leaves the retired data keys, in
batches that survive an interruption, while the gateway keeps writing; then the retired
keys are shredded."""

from __future__ import annotations

import asyncio
import base64
import json

import anyio.to_thread
import pytest
from sqlmodel import col, select
from synthetic import PEOPLE, claim_body, rights_body
from typer.testing import CliRunner

from gateway.claims.payload import payload_context
from gateway.cli.security import security_app
from gateway.security.crypto import Cipher
from gateway.security.envelope import DataKeyStore, master_kid
from gateway.security.keyring import KeyRing, load_keyring
from gateway.security.reencrypt import reencrypt_all
from gateway.storage.db import Database
from gateway.storage.models import AuditEntry, Claim, DataKey, RightsCacheEntry, User, utcnow

pytestmark = pytest.mark.anyio


def write_config(tmp_path, settings):
    path = tmp_path / "gateway.toml"
    path.write_text(f'environment = "development"\ndatabase_url = "{settings.database_url}"\n'
                    f'data_dir = "{settings.data_dir}"\n')
    return str(path)


def rotate(config, *extra):
    result = CliRunner().invoke(security_app, ["rotate-data-key", "--config", config, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def keys(db):
    return {k.id: k for k in db.read_now(lambda s: list(s.exec(select(DataKey)).all()))}


def on_keys(db):
    """DEK of every encrypted record, from the blob itself (not the data_key_id column)."""
    claims = db.read_now(lambda s: list(s.exec(select(Claim)).all()))
    rights = db.read_now(lambda s: list(s.exec(select(RightsCacheEntry)).all()))
    found = [Cipher.data_key_of(c.payload_enc) for c in claims]
    found += [Cipher.data_key_of(r.answer_enc) for r in rights]
    return found


def retired_in_use(db):
    retired = {k for k, row in keys(db).items() if row.retired_at is not None}
    return [dek for dek in on_keys(db) if dek in retired]


async def submit(client, headers, invoice, person=0):
    answer = await client.post("/v1/claims", json=claim_body(invoice, person=person),
                               headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def nir_of(cipher, db, claim_id):
    claim = db.read_now(lambda s: s.get(Claim, claim_id))
    return cipher.decrypt_json(claim.payload_enc,
                               context=payload_context(claim_id))["beneficiary"]["nir"]


async def test_reencrypt_is_resumable_and_shreds_the_retired_keys(
        app, client, pharmacy, settings, tmp_path):
    ctx = app.state.context
    claims = {await submit(client, pharmacy, f"RE{n}", person=n % 3): n % 3 for n in range(5)}
    assert (await client.post("/v1/rights", json=rights_body(person=0),
                              headers=pharmacy)).status_code == 200
    old_keys = set(keys(ctx.db))
    config = write_config(tmp_path, settings)

    assert "retired 2 data key(s)" in rotate(config)
    assert len(retired_in_use(ctx.db)) == 6

    class Interrupted(Exception):
        pass

    def stop_after_first_batch(line: str) -> None:
        raise Interrupted(line)

    keyring = load_keyring(settings)
    other = Database(settings.database_url)  # another process's engine, as the CLI's
    try:
        with pytest.raises(Interrupted, match="2 re-encrypted"):
            reencrypt_all(other, Cipher(keyring, DataKeyStore(other, keyring)), batch_size=2,
                          settle_s=0, echo=stop_after_first_batch)
    finally:
        other.engine.dispose()
    assert len(retired_in_use(ctx.db)) == 4  # one batch committed, then the interruption

    output = rotate(config, "--reencrypt", "--batch-size", "2", "--settle-s", "0")

    assert "resuming the unfinished rotation" in output  # nothing retired a second time
    assert "pass 1 claims.payload_enc: 3 re-encrypted" in output
    assert "pass 1 rights_cache.answer_enc: 1 re-encrypted" in output
    assert "re-encrypted 4 record(s); 0 unreadable left as they are; shredded 2" in output
    assert retired_in_use(ctx.db) == []
    now = keys(ctx.db)
    assert all(now[k].wrapped is None and now[k].shredded_at for k in old_keys)
    assert {now[dek].retired_at for dek in on_keys(ctx.db)} == {None}
    fresh = Cipher(keyring, DataKeyStore(ctx.db, keyring))  # a restarted instance
    assert {claim_id: nir_of(fresh, ctx.db, claim_id) for claim_id in claims} == {
        claim_id: PEOPLE[person]["nir"] for claim_id, person in claims.items()}
    answer = await client.get(f"/v1/claims/{next(iter(claims))}", headers=pharmacy)
    assert answer.json()["nir_masked"].startswith(PEOPLE[0]["nir"][:5])  # the running one
    entries = ctx.db.read_now(lambda s: s.exec(select(AuditEntry).where(
        col(AuditEntry.action).in_(["keys.rotate_data_key", "keys.reencrypt"]))).all())
    assert [(e.action, json.loads(e.details_json)) for e in entries] == [
        ("keys.rotate_data_key", {"count": 0, "retired": 2, "master_kid": fresh.store._masters
                                  .current_kid}),
        ("keys.reencrypt", {"reencrypted": 4, "unreadable": 0, "shredded": 2})]


async def test_reencrypt_runs_alongside_the_gateways_writes(
        app, client, pharmacy, settings, tmp_path):
    ctx = app.state.context
    before = [await submit(client, pharmacy, f"BG{n}") for n in range(4)]
    rotate(write_config(tmp_path, settings))
    keyring = load_keyring(settings)
    other = Database(settings.database_url)
    lines: list[str] = []
    try:
        cipher = Cipher(keyring, DataKeyStore(other, keyring))
        # settle_s covers the 5 s a running instance may keep using a retired key
        job = asyncio.ensure_future(anyio.to_thread.run_sync(
            lambda: reencrypt_all(other, cipher, batch_size=1, settle_s=6, echo=lines.append)))
        during = []
        while not job.done():
            during.append(await submit(client, pharmacy, f"DU{len(during)}"))
            await asyncio.sleep(0.05)
        tally = await job
    finally:
        other.engine.dispose()
    assert len(during) > 10 and tally.unreadable == 0
    assert any(line.startswith("pass 2 ") for line in lines) or tally.reencrypted == 4
    assert retired_in_use(ctx.db) == []
    fresh = Cipher(keyring, DataKeyStore(ctx.db, keyring))
    assert {nir_of(fresh, ctx.db, claim_id) for claim_id in before + during} == {
        PEOPLE[0]["nir"]}


async def test_after_a_master_rotation_nothing_needs_the_old_master(
        app, client, pharmacy, settings, tmp_path):
    ctx = app.state.context
    claim_id = await submit(client, pharmacy, "MR1", person=1)
    old = load_keyring(settings)
    profile = ctx.cipher.encrypt_json({"name": "Ada", "email": "ada@example.org"},
                                      context="user:usr_0123456789abcdef")
    ctx.db.write_now(lambda s: s.add(User(
        id="usr_0123456789abcdef", role="admin", email_index="0" * 64, profile_enc=profile,
        created_at=utcnow())))
    new_key = bytes(range(32))
    config = tmp_path / "rotated.toml"
    config.write_text(
        f'environment = "development"\ndatabase_url = "{settings.database_url}"\n'
        f'data_dir = "{settings.data_dir}"\n[security]\n'
        f'data_key = "{base64.b64encode(new_key).decode()}"\n'
        f'previous_data_keys = ["{base64.b64encode(old.data_key).decode()}"]\n')

    output = rotate(str(config), "--reencrypt", "--settle-s", "0")

    assert "re-wrapped 1 data key(s)" in output and "retired 1 data key(s)" in output
    assert "pass 1 users.profile_enc: 1 re-encrypted" in output
    new_only = KeyRing(new_key, (), old.index_key, old.signing_key)
    reader = Cipher(new_only, DataKeyStore(ctx.db, new_only))
    assert nir_of(reader, ctx.db, claim_id) == PEOPLE[1]["nir"]
    user = ctx.db.read_now(lambda s: s.get(User, "usr_0123456789abcdef"))
    assert reader.decrypt_json(user.profile_enc, context=f"user:{user.id}")["name"] == "Ada"
    assert {row.master_kid for row in keys(ctx.db).values() if row.wrapped} == {
        master_kid(new_key)}
