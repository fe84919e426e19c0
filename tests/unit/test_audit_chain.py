"""The audit trail altered in every way fails verification, naming the entry.

A real SQLite file, migrated; each alteration is what someone with database access
could do: change a field, delete an entry, swap two entries, append one by hand
with a correct SHA-256 chain, truncate the tail behind a signed head, rewrite and
re-hash the chain with the audit key, forge a head, re-sign with the receipt key.
Heads are signed with the audit head key; those signed before it, with the receipt
key, still verify. Anchors outside the database: tests/unit/test_audit_anchors.py.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import text
from sqlmodel import Session, col, select
from typer.testing import CliRunner
from waiting import eventually

from gateway.audit.heads import (
    HeadKeys,
    HeadSigner,
    head_message,
    public_keys,
    run_audit_heads,
    verify_trail,
)
from gateway.audit.trail import GENESIS, AuditLog, chain_hash
from gateway.cli.audit import audit_app
from gateway.receipts.signing import ReceiptSigner
from gateway.security.apikeys import Principal
from gateway.security.keyring import load_audit_head_key, load_audit_key
from gateway.settings import ConfigError, Settings, load_settings
from gateway.storage.db import Database
from gateway.storage.models import AuditEntry, AuditHead, utcnow

AUDIT_KEY = bytes(range(32))
SEED = bytes([9]) * 32  # the audit head key
RECEIPT_SEED = bytes([7]) * 32  # the receipt signing key, which signed heads before 0012
ACTOR = Principal(key_id="key_0123456789abcdef", role="operations", finess=None, operators=None)


@pytest.fixture
def db(tmp_path: Path, migrated_sqlite) -> Iterator[Database]:  # type: ignore[no-untyped-def]
    url = migrated_sqlite(tmp_path / "audit.db")
    database = Database(url)
    yield database
    database.engine.dispose()


@pytest.fixture
def log() -> AuditLog:
    return AuditLog(AUDIT_KEY)


def build_chain(db: Database, log: AuditLog, count: int = 5) -> None:
    for index in range(1, count + 1):
        db.write_now(lambda s, i=index: log.append(
            s, ACTOR, "operator.pause", object_id=f"op{i}", reason=f"r{i}"))


def sign_head(db: Database) -> AuditHead | None:
    return db.write_now(HeadSigner(SEED).sign)


def head_keys() -> HeadKeys:
    keys = HeadKeys(legacy=public_keys(ReceiptSigner(RECEIPT_SEED).jwks()))
    keys.add_head_key(HeadSigner(SEED).public_raw)
    return keys


def check(db: Database, log: AuditLog):  # type: ignore[no-untyped-def]
    return db.read_now(lambda s: verify_trail(s, audit_log=log, keys=head_keys()))


def legacy_head(db: Database, entry_id: int) -> None:
    """A head as signed before migration 0012: the receipt key, no deployment."""
    def write(session: Session) -> None:
        entry = session.get(AuditEntry, entry_id)
        assert entry is not None
        signer = ReceiptSigner(RECEIPT_SEED)
        head = AuditHead(entry_id=entry_id, entry_hash=entry.entry_hash, signature="",
                         kid=signer.kid, signed_at=utcnow())
        raw = signer._private.sign(head_message(head))
        head.signature = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        session.add(head)

    db.write_now(write)


def sql(db: Database, statement: str, **params: object) -> None:
    db.write_now(lambda s: s.execute(text(statement), params))


def test_an_intact_chain_with_signed_heads_passes(db: Database, log: AuditLog) -> None:
    build_chain(db, log, 3)
    assert sign_head(db) is not None
    build_chain(db, log, 2)
    assert sign_head(db) is not None
    result = check(db, log)
    assert result.ok and result.checked == 5 and result.first_broken_id is None


def test_an_empty_chain_passes(db: Database, log: AuditLog) -> None:
    assert sign_head(db) is None
    assert check(db, log).ok


def test_a_changed_field_is_named(db: Database, log: AuditLog) -> None:
    build_chain(db, log)
    sql(db, "UPDATE audit_log SET outcome = 'refused' WHERE id = 3")
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 3 and result.checked == 2
    assert "altered" in (result.problem or "")


def test_a_deleted_entry_is_named(db: Database, log: AuditLog) -> None:
    build_chain(db, log)
    sql(db, "DELETE FROM audit_log WHERE id = 3")
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 3
    assert "missing" in (result.problem or "")


def test_the_first_entry_deleted_is_named(db: Database, log: AuditLog) -> None:
    build_chain(db, log)
    sql(db, "DELETE FROM audit_log WHERE id = 1")
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 1


def test_two_entries_swapped_are_named(db: Database, log: AuditLog) -> None:
    build_chain(db, log)
    columns = ("at", "actor", "role", "action", "object_id", "outcome", "details_json",
               "prev_hash", "entry_hash", "entry_mac")

    def swap(session: Session) -> None:
        two, three = (session.get(AuditEntry, i) for i in (2, 3))
        assert two is not None and three is not None
        values = {name: getattr(two, name) for name in columns}
        for name in columns:
            setattr(two, name, getattr(three, name))
            setattr(three, name, values[name])
        session.add_all([two, three])

    db.write_now(swap)
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 2
    assert "moved" in (result.problem or "")


def hand_made(db: Database, sealer: AuditLog | None) -> None:
    """An entry with a correct SHA-256 link and hash, written straight into the table."""
    def append(session: Session) -> None:
        last = session.exec(select(AuditEntry).order_by(col(AuditEntry.id).desc())).first()
        entry = AuditEntry(id=(last.id or 0) + 1 if last else 1, at=utcnow(), actor=ACTOR.key_id,
                           role="admin", action="key.create", object_id="key_forged",
                           outcome="ok", details_json="{}",
                           prev_hash=last.entry_hash if last else GENESIS)
        entry.entry_hash = chain_hash(entry.prev_hash, entry)
        entry.entry_mac = sealer.seal(entry.entry_hash) if sealer else ""
        session.add(entry)

    db.write_now(append)


@pytest.mark.parametrize("sealer", [None, AuditLog(bytes(32))], ids=["no-mac", "other-key"])
def test_an_entry_appended_by_hand_is_named(db: Database, log: AuditLog,
                                            sealer: AuditLog | None) -> None:
    build_chain(db, log)
    hand_made(db, sealer)
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 6 and result.checked == 5
    assert "not sealed by the gateway" in (result.problem or "")


def test_a_truncated_tail_behind_a_signed_head_is_named(db: Database, log: AuditLog) -> None:
    build_chain(db, log)
    sign_head(db)
    sql(db, "DELETE FROM audit_log WHERE id >= 4")
    assert log.verify_entries(db.read_now(
        lambda s: list(s.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()))).ok
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 5 and result.checked == 3
    assert "missing" in (result.problem or "") and "signed head" in (result.problem or "")


def test_a_truncated_tail_then_new_entries_is_named(db: Database, log: AuditLog) -> None:
    build_chain(db, log)
    sign_head(db)
    sql(db, "DELETE FROM audit_log WHERE id >= 4")
    build_chain(db, log, 2)  # ids 4 and 5 again, validly sealed, but not what was signed
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 5
    assert "rewritten" in (result.problem or "")


def test_a_chain_rewritten_and_rehashed_with_the_audit_key_fails(db: Database,
                                                                   log: AuditLog) -> None:
    build_chain(db, log)
    sign_head(db)

    def rewrite(session: Session) -> None:
        previous = GENESIS
        for entry in session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all():
            if entry.id == 2:
                entry.outcome = "refused"
            entry.prev_hash = previous
            entry.entry_hash = chain_hash(previous, entry)
            entry.entry_mac = log.seal(entry.entry_hash)
            previous = entry.entry_hash
            session.add(entry)

    db.write_now(rewrite)
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 5
    assert "rewritten" in (result.problem or "")


def test_a_forged_head_is_named(db: Database, log: AuditLog) -> None:
    build_chain(db, log)
    sign_head(db)
    sql(db, "UPDATE audit_heads SET entry_id = 3, entry_hash = "
            "(SELECT entry_hash FROM audit_log WHERE id = 3)")
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 3
    assert "invalid signature" in (result.problem or "")


def test_heads_signed_with_the_receipt_key_before_still_verify(db: Database,
                                                                 log: AuditLog) -> None:
    build_chain(db, log, 3)
    legacy_head(db, 3)
    build_chain(db, log, 2)
    sign_head(db)
    assert check(db, log).ok
    sql(db, "DELETE FROM audit_log WHERE id >= 3")
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 3 and "truncated tail" in result.problem


def test_a_head_re_signed_with_the_receipt_key_after_the_head_key_is_refused(
        db: Database, log: AuditLog) -> None:
    build_chain(db, log, 3)
    sign_head(db)
    build_chain(db, log, 1)
    legacy_head(db, 4)  # a stolen receipt key, after the head key took over
    result = check(db, log)
    assert not result.ok and result.first_broken_id == 4
    assert "receipt key after the audit head key" in (result.problem or "")


def test_a_head_moved_to_another_deployment_fails(db: Database, log: AuditLog) -> None:
    build_chain(db, log, 2)
    sign_head(db)
    sql(db, "UPDATE deployment SET id = 'dep_0000000000000000'")
    result = check(db, log)
    assert not result.ok and "invalid signature" in (result.problem or "")


def test_the_lowest_broken_entry_wins(db: Database, log: AuditLog) -> None:
    build_chain(db, log)
    sign_head(db)
    sql(db, "DELETE FROM audit_log WHERE id = 5")
    sql(db, "UPDATE audit_log SET action = 'x' WHERE id = 2")
    assert check(db, log).first_broken_id == 2


def test_a_head_is_signed_only_when_it_changed(db: Database, log: AuditLog) -> None:
    build_chain(db, log, 2)
    first = sign_head(db)
    assert first is not None and first.entry_id == 2 and sign_head(db) is None
    assert first.kid == HeadSigner(SEED).kid != ReceiptSigner(RECEIPT_SEED).kid  # its own key
    build_chain(db, log, 1)
    second = sign_head(db)
    assert second is not None and second.entry_id == 3


def test_the_head_task_signs_periodically_and_once_at_shutdown(
        tmp_path: Path, migrated_sqlite) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(environment="development", data_dir=tmp_path / "data",
                        database_url=migrated_sqlite(tmp_path / "gw.db"))
    log = AuditLog.from_settings(settings)

    async def scenario() -> list[int]:
        db = Database(settings.database_url)
        signed: list[int | None] = []  # each period's head (None: nothing new to sign)

        async def write(work):  # type: ignore[no-untyped-def]
            head = await db.write(work)
            signed.append(head.entry_id if head is not None else None)
            return head

        ctx = SimpleNamespace(settings=settings, db=SimpleNamespace(write=write))
        stopping = asyncio.Event()
        await db.write(lambda s: log.append(s, ACTOR, "operator.pause", object_id="a"))
        task = asyncio.create_task(run_audit_heads(ctx, stopping, interval_s=0.02))
        # several periods, one change: one head, then periods that sign nothing
        await eventually(lambda: len(signed) >= 4, what="four periods")
        assert signed[:4] == [1, None, None, None]
        await db.write(lambda s: log.append(s, ACTOR, "operator.resume", object_id="a"))
        stopping.set()
        task.cancel()  # as the lifespan does: the final head is still written
        await asyncio.gather(task, return_exceptions=True)
        heads = await db.read(lambda s: list(s.exec(select(AuditHead)).all()))
        await db.dispose()
        return [head.entry_id for head in heads]

    assert asyncio.run(scenario()) == [1, 2]


def test_the_audit_key_is_generated_in_development_and_required_outside(
        tmp_path: Path) -> None:
    dev = Settings(environment="development", data_dir=tmp_path)
    assert load_audit_key(dev) == load_audit_key(dev)
    assert oct((tmp_path / "audit_key.b64").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError, match="security.audit_key: required outside development"):
        load_audit_key(Settings(environment="production", data_dir=tmp_path / "prod"))
    given = Settings(security={"audit_key": base64.b64encode(AUDIT_KEY).decode()})
    assert load_audit_key(given) == AUDIT_KEY


def test_the_audit_head_key_is_generated_in_development_and_required_outside(
        tmp_path: Path) -> None:
    dev = Settings(environment="development", data_dir=tmp_path)
    assert load_audit_head_key(dev) == load_audit_head_key(dev)
    assert oct((tmp_path / "audit_head_key.b64").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(ConfigError,
                       match="security.audit_head_key: required outside development"):
        load_audit_head_key(Settings(environment="production", data_dir=tmp_path / "prod"))
    given = Settings(security={"audit_head_key": base64.b64encode(SEED).decode()})
    assert HeadSigner.from_settings(given).kid == HeadSigner(SEED).kid


# --- the command line -----------------------------------------------------------------

@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "gateway.toml"
    path.write_text(f'environment = "development"\ndata_dir = "{tmp_path / "var"}"\n'
                    f'database_url = "sqlite:///{tmp_path / "cli.db"}"\n')
    return path


def test_cli_passes_an_intact_chain_and_exits_1_naming_the_altered_entry(
        config: Path, migrated_sqlite) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(config)
    migrated_sqlite(settings.database_url)
    db = Database(settings.database_url)
    try:
        build_chain(db, AuditLog.from_settings(settings), 4)
        db.write_now(HeadSigner.from_settings(settings).sign)
        runner = CliRunner()
        intact = runner.invoke(audit_app, ["verify", "--config", str(config)])
        assert intact.exit_code == 0, intact.output
        assert "intact: 4 entries" in intact.stdout
        sql(db, "UPDATE audit_log SET object_id = 'elsewhere' WHERE id = 2")
        broken = runner.invoke(audit_app, ["verify", "--config", str(config)])
        assert broken.exit_code == 1
        assert "audit entry 2: altered" in broken.stderr
        sql(db, "DELETE FROM audit_log WHERE id >= 2")
        truncated = runner.invoke(audit_app, ["verify", "--config", str(config)])
        assert truncated.exit_code == 1 and "audit entry 4: missing" in truncated.stderr
    finally:
        db.engine.dispose()
