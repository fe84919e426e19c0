"""Envelope encryption: a data key per scope, wrapped by the master key; rotation; shredding."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from gateway.security.crypto import Cipher, DecryptionError
from gateway.security.envelope import (
    CURRENT_RECHECK_S,
    DataKeyStore,
    master_kid,
    retire_data_keys,
    rewrap_data_keys,
    shred,
)
from gateway.security.keyring import KeyRing
from gateway.storage.db import Database
from gateway.storage.migrate import upgrade
from gateway.storage.models import DataKey, utcnow

OLD, NEW, OTHER = b"o" * 32, b"n" * 32, b"x" * 32
NIR = b"185077511512396"


def ring(data: bytes, previous: tuple[bytes, ...] = ()) -> KeyRing:
    return KeyRing(data_key=data, previous_data_keys=previous, index_key=b"i" * 32,
                   signing_key=b"s" * 32)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("envelope") / "gateway.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Iterator[Database]:
    target = tmp_path / "gateway.db"
    target.write_bytes(template.read_bytes())
    database = Database(f"sqlite:///{target}")
    yield database
    database.engine.dispose()


def cipher(db: Database, keyring: KeyRing, **options: float) -> Cipher:
    """A cipher as a (re)started instance builds it: nothing cached yet."""
    return Cipher(keyring, DataKeyStore(db, keyring, **options))


def rows(db: Database) -> list[DataKey]:
    return db.read_now(lambda s: list(s.exec(select(DataKey).order_by(DataKey.created_at))))


def test_round_trip_under_a_scope_key_bound_to_its_record(db):
    c = cipher(db, ring(OLD))
    blob = c.encrypt(NIR, context="claims:clm_1", scope="claims:330001231:2026-11")
    assert NIR not in blob and blob[0] == 2
    assert c.decrypt(blob, context="claims:clm_1") == NIR
    assert cipher(db, ring(OLD)).decrypt(blob, context="claims:clm_1") == NIR  # restarted
    with pytest.raises(DecryptionError, match="altered or bound"):
        c.decrypt(blob, context="claims:clm_2")
    with pytest.raises(DecryptionError):
        c.decrypt(blob[:-1] + bytes([blob[-1] ^ 1]), context="claims:clm_1")


def test_the_blob_names_its_data_key_and_each_scope_has_its_own(db):
    c = cipher(db, ring(OLD))
    a1 = c.encrypt_json({"n": 1}, context="c", scope="claims:330001231:2026-11")
    a2 = c.encrypt_json({"n": 2}, context="c", scope="claims:330001231:2026-11")
    b = c.encrypt_json({"n": 3}, context="c", scope="claims:690000880:2026-11")
    stored = {row.id: row for row in rows(db)}
    assert c.data_key_of(a1) == c.data_key_of(a2) != c.data_key_of(b)
    assert set(stored) == {c.data_key_of(a1), c.data_key_of(b)}
    assert stored[c.data_key_of(a1)].scope == "claims:330001231:2026-11"
    assert stored[c.data_key_of(b)].master_kid == master_kid(OLD)
    assert all(row.wrapped and len(row.wrapped) == 12 + 32 + 16 for row in stored.values())
    assert c.data_key_of(c.encrypt(b"x", context="c")) is None  # no scope: master key


def test_rotation_rewraps_keys_old_data_stays_readable_new_data_on_the_new_master(db):
    before = cipher(db, ring(OLD)).encrypt(NIR, context="c", scope="claims:330001231:2026-10")
    rotated = ring(NEW, previous=(OLD,))
    # The new master is deployed, the old one moved to previous keys: still readable.
    assert cipher(db, rotated).decrypt(before, context="c") == NIR
    assert db.write_now(lambda s: rewrap_data_keys(s, rotated)) == 1
    assert db.write_now(lambda s: rewrap_data_keys(s, rotated)) == 0
    assert {row.master_kid for row in rows(db)} == {master_kid(NEW)}
    # The old master is gone for good: no record was re-encrypted, all still readable.
    new_only = cipher(db, ring(NEW))
    assert new_only.decrypt(before, context="c") == NIR
    after = new_only.encrypt(NIR, context="c", scope="claims:330001231:2026-11")
    created = next(row for row in rows(db) if row.id == new_only.data_key_of(after))
    assert created.master_kid == master_kid(NEW)
    assert new_only.data_key_of(after) != new_only.data_key_of(before)


def test_an_unknown_master_key_reads_nothing(db):
    blob = cipher(db, ring(OLD)).encrypt(NIR, context="c", scope="rights:2026-11")
    with pytest.raises(DecryptionError, match="unknown master key"):
        cipher(db, ring(OTHER)).decrypt(blob, context="c")
    with pytest.raises(DecryptionError, match="unknown data key"):
        cipher(db, ring(OTHER)).decrypt(Cipher(ring(OLD)).encrypt(NIR, context="c"),
                                        context="c")


def test_shredding_a_data_key_makes_its_records_unreadable_everywhere(db):
    here, elsewhere = cipher(db, ring(OLD)), cipher(db, ring(OLD), recheck_s=0)
    blob = here.encrypt(NIR, context="c", scope="claims:330001231:2026-11")
    kept = here.encrypt(NIR, context="c", scope="claims:690000880:2026-11")
    assert elsewhere.decrypt(blob, context="c") == NIR
    dek_id = here.data_key_of(blob)
    assert db.write_now(lambda s: shred(s, [dek_id], now=utcnow())) == 1
    here.forget([dek_id])
    for reader in (here, elsewhere, cipher(db, ring(OLD))):
        with pytest.raises(DecryptionError, match="shredded"):
            reader.decrypt(blob, context="c")
        assert reader.decrypt(kept, context="c") == NIR
    shredded = next(row for row in rows(db) if row.id == dek_id)
    assert shredded.wrapped is None and shredded.shredded_at is not None
    fresh = here.encrypt(NIR, context="c", scope="claims:330001231:2026-11")
    assert here.data_key_of(fresh) != dek_id  # a shredded key is never used again


def test_version_1_blobs_still_decrypt_and_purged_ones_do_not(db):
    legacy = Cipher(ring(OLD)).encrypt_json({"nir": "185077511512396"}, context="claims:clm_1")
    assert legacy[0] == 1
    c = cipher(db, ring(NEW, previous=(OLD,)))
    assert c.decrypt_json(legacy, context="claims:clm_1") == {"nir": "185077511512396"}
    with pytest.raises(DecryptionError, match="purged"):
        c.decrypt(b"", context="claims:clm_1")


def test_a_key_created_inside_a_write_commits_or_rolls_back_with_it(db):
    c = cipher(db, ring(OLD))

    def failing(session):
        session.exec(select(DataKey)).all()  # the transaction has begun, as in a real write
        c.encrypt(NIR, context="c", scope="claims:330001231:2026-11")
        raise RuntimeError("the unit of work fails")

    with pytest.raises(RuntimeError):
        db.write_now(failing)
    assert rows(db) == []  # rolled back with the record, and not cached

    def succeeding(session):
        session.exec(select(DataKey)).all()
        first = c.encrypt(NIR, context="c", scope="claims:330001231:2026-11")
        second = c.encrypt(NIR, context="c", scope="claims:330001231:2026-11")
        assert c.data_key_of(first) == c.data_key_of(second)
        assert c.decrypt(second, context="c") == NIR  # readable inside its transaction
        return first

    blob = db.write_now(succeeding)
    assert [row.id for row in rows(db)] == [c.data_key_of(blob)]
    assert c.decrypt(blob, context="c") == NIR


def test_threads_share_one_store(db):
    c = cipher(db, ring(OLD))
    blobs: list[bytes] = []

    def work(n: int) -> None:
        scope = f"claims:330001231:2026-{n % 3 + 1:02d}"

        def write(session):
            session.exec(select(DataKey)).all()
            return c.encrypt(NIR, context="c", scope=scope)

        blobs.append(db.write_now(write))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(blobs) == 12
    assert all(c.decrypt(blob, context="c") == NIR for blob in blobs)
    assert len({row.scope for row in rows(db)}) == 3


# --- rotation that contains a leak -----------------------------------------------------

def copy_of_data_keys(db: Database) -> list[dict[str, object]]:
    """What a leaked dump of `data_keys` holds."""
    return [row.model_dump() for row in rows(db)]


def restored(tmp_path: Path, template: Path, keys: list[dict[str, object]]) -> Database:
    """A database holding only that dump: what the thief can unwrap from."""
    target = tmp_path / "stolen.db"
    target.write_bytes(template.read_bytes())
    stolen = Database(f"sqlite:///{target}")
    stolen.write_now(lambda s: s.add_all([DataKey(**row) for row in keys]))
    return stolen


def test_after_rotation_new_records_are_unreadable_with_the_old_master_and_keys(
        db, template, tmp_path):
    scope = "claims:330001231:2026-11"
    before = cipher(db, ring(OLD)).encrypt(NIR, context="c", scope=scope)
    leaked = copy_of_data_keys(db)  # with the old master: reads `before`, as it always could
    rotated = ring(NEW, previous=(OLD,))
    db.write_now(lambda s: rewrap_data_keys(s, rotated))
    assert db.write_now(lambda s: retire_data_keys(s, now=utcnow())) == 1
    after = cipher(db, rotated).encrypt(NIR, context="c", scope=scope)

    assert Cipher.data_key_of(after) != Cipher.data_key_of(before)  # a new DEK, same scope
    stolen = restored(tmp_path, template, leaked)
    try:
        thief = cipher(stolen, ring(OLD))
        assert thief.decrypt(before, context="c") == NIR
        with pytest.raises(DecryptionError, match="unknown or shredded"):
            thief.decrypt(after, context="c")
    finally:
        stolen.engine.dispose()
    with pytest.raises(DecryptionError, match="unknown master key"):  # today's keys, old master
        cipher(db, ring(OLD)).decrypt(after, context="c")
    reader = cipher(db, rotated)
    assert reader.decrypt(before, context="c") == reader.decrypt(after, context="c") == NIR


def test_a_running_instance_stops_using_a_retired_key_within_its_recheck(db):
    now = [1000.0]
    running = cipher(db, ring(OLD), clock=lambda: now[0])  # type: ignore[arg-type]
    scope = "rights:2026-11"
    first = running.encrypt(NIR, context="c", scope=scope)
    db.write_now(lambda s: retire_data_keys(s, now=utcnow()))  # by another process
    now[0] += CURRENT_RECHECK_S - 0.5
    assert running.data_key_of(running.encrypt(NIR, context="c", scope=scope)) == \
        running.data_key_of(first)  # not yet looked
    now[0] += 1.0
    fresh = running.encrypt(NIR, context="c", scope=scope)
    assert running.data_key_of(fresh) != running.data_key_of(first)
    assert running.decrypt(first, context="c") == NIR  # a retired key still decrypts
    retired = {row.id: row.retired_at for row in rows(db)}
    assert retired[running.data_key_of(first)] is not None
    assert retired[running.data_key_of(fresh)] is None
