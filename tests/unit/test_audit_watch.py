"""The console's view of the audit trail: a full walk in the background leaves a checkpoint,
and a view then reads only what came after it, yet still names every alteration it can see:
an entry after the checkpoint altered, the trail cut or re-chained below it, a forged head.
An old entry altered in place, its hash left as it was, is named by the next full walk.
On each configured backend (SQLite; PostgreSQL with GATEWAY_TEST_POSTGRES_URL)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlmodel import col, select

from gateway.audit import repository, watch
from gateway.audit.heads import HeadKeys, HeadSigner
from gateway.audit.trail import AuditLog, chain_hash
from gateway.audit.watch import TrailReport, TrailWatch
from gateway.security.apikeys import Principal
from gateway.storage.db import Database
from gateway.storage.models import AuditEntry, AuditHead, utcnow
from gateway.storage.unit import UnitOfWork

AUDIT_KEY = bytes(range(32))
SEED = bytes([9]) * 32  # the audit head key
ACTOR = Principal(key_id="key_0123456789abcdef", role="operations", finess=None, operators=None)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.engine.dispose()


@pytest.fixture
def log() -> AuditLog:
    return AuditLog(AUDIT_KEY)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(after which entry, how many entries) for every read of the chain."""
    seen: list[tuple[int, int]] = []
    original = repository.entries_after

    def counted(session: UnitOfWork, after_id: int, limit: int | None = None,
                ) -> list[AuditEntry]:
        entries = original(session, after_id, limit)
        seen.append((after_id, len(entries)))
        return entries

    monkeypatch.setattr(repository, "entries_after", counted)
    return seen


def head_keys() -> HeadKeys:
    keys = HeadKeys()
    keys.add_head_key(HeadSigner(SEED).public_raw)
    return keys


def append(db: Database, log: AuditLog, count: int) -> None:
    def entries(session: UnitOfWork) -> None:
        for index in range(count):
            log.append(session, ACTOR, "operator.pause", object_id=f"op{index}")

    db.write_now(entries)


def sql(db: Database, statement: str) -> None:
    db.write_now(lambda session: session.execute(text(statement)))


def verdict(report: TrailReport) -> tuple[bool | None, int | None]:
    result = report.result
    return (None, None) if result is None else (result.ok, result.first_broken_id)


def watched(db: Database, log: AuditLog, entries: int = 30) -> TrailWatch:
    append(db, log, entries)
    return TrailWatch(db, log, head_keys)


def test_a_view_reads_only_what_came_after_the_checkpoint(
        db: Database, log: AuditLog, reads: list[tuple[int, int]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "CHUNK", 7)
    trail = watched(db, log)

    async def scenario() -> TrailReport:
        await trail.full_walk()
        assert reads == [(0, 7), (7, 7), (14, 7), (21, 7), (28, 2)]
        reads.clear()
        append(db, log, 3)
        first = await trail.view()
        assert first.result is not None and first.result.checked == 33
        return await trail.view()

    report = asyncio.run(scenario())
    assert verdict(report) == (True, None) and report.full_at is not None
    assert reads == [(30, 3), (33, 0)]  # the new entries, then nothing new


def test_an_entry_altered_after_the_checkpoint_is_named_by_the_view(
        db: Database, log: AuditLog) -> None:
    trail = watched(db, log)

    async def scenario() -> TrailReport:
        await trail.full_walk()
        append(db, log, 5)
        sql(db, "UPDATE audit_log SET outcome = 'refused' WHERE id = 33")
        return await trail.view()

    report = asyncio.run(scenario())
    assert verdict(report) == (False, 33)
    assert "altered" in (report.result.problem or "")  # type: ignore[union-attr]


def test_the_trail_cut_below_the_checkpoint_is_named_at_once(
        db: Database, log: AuditLog) -> None:
    trail = watched(db, log)

    async def scenario() -> TrailReport:
        await trail.full_walk()
        sql(db, "DELETE FROM audit_log WHERE id >= 25")
        append(db, log, 10)  # ids 25 to 34 again, sealed: only the checkpoint tells
        return await trail.view()

    report = asyncio.run(scenario())
    assert verdict(report) == (False, 30)
    assert "rewritten" in (report.result.problem or "")  # type: ignore[union-attr]


def test_the_trail_re_chained_with_the_stolen_audit_key_is_named_at_once(
        db: Database, log: AuditLog) -> None:
    """Entry 10 rewritten, and every later one re-hashed and re-sealed with the audit key:
    each entry checks, but the checkpoint's hash is not the one the full walk saw."""
    trail = watched(db, log)

    def rewrite(session: UnitOfWork) -> None:
        entries = session.exec(select(AuditEntry).where(col(AuditEntry.id) >= 10)
                               .order_by(col(AuditEntry.id))).all()
        previous = session.exec(select(AuditEntry.entry_hash)
                                .where(col(AuditEntry.id) == 9)).one()
        entries[0].outcome = "refused"
        for entry in entries:
            entry.prev_hash = previous
            entry.entry_hash = previous = chain_hash(previous, entry)
            entry.entry_mac = log.seal(entry.entry_hash)
            session.add(entry)

    async def scenario() -> TrailReport:
        await trail.full_walk()
        db.write_now(rewrite)
        return await trail.view()

    report = asyncio.run(scenario())
    assert verdict(report) == (False, 30)
    assert "rewritten" in (report.result.problem or "")  # type: ignore[union-attr]


def test_an_old_entry_altered_in_place_is_named_by_the_next_full_walk(
        db: Database, log: AuditLog, reads: list[tuple[int, int]]) -> None:
    trail = watched(db, log)

    async def scenario() -> tuple[TrailReport, TrailReport]:
        await trail.full_walk()
        sql(db, "UPDATE audit_log SET outcome = 'refused' WHERE id = 5")
        before = await trail.view()  # reads nothing below the checkpoint
        await trail.full_walk()
        return before, await trail.view()

    before, after = asyncio.run(scenario())
    assert verdict(before) == (True, None)
    assert verdict(after) == (False, 5)
    assert "altered" in (after.result.problem or "")  # type: ignore[union-attr]


def test_a_forged_head_signed_after_the_checkpoint_is_named(
        db: Database, log: AuditLog) -> None:
    trail = watched(db, log)
    db.write_now(HeadSigner(SEED).sign)

    def forge(session: UnitOfWork) -> None:
        entry_hash = session.exec(select(AuditEntry.entry_hash)
                                  .where(col(AuditEntry.id) == 32)).one()
        forger = HeadSigner(bytes([3]) * 32)
        forger.kid = HeadSigner(SEED).kid  # posing as the gateway's head key
        head = AuditHead(entry_id=32, entry_hash=entry_hash, signature="A" * 86,
                         kid=forger.kid, signed_at=utcnow())
        session.add(head)

    async def scenario() -> tuple[TrailReport, TrailReport]:
        await trail.full_walk()
        append(db, log, 2)
        db.write_now(HeadSigner(SEED).sign)  # a genuine head after the checkpoint
        genuine = await trail.view()
        db.write_now(forge)
        return genuine, await trail.view()

    genuine, forged = asyncio.run(scenario())
    assert verdict(genuine) == (True, None)
    assert verdict(forged) == (False, 32)
    assert "invalid signature" in (forged.result.problem or "")  # type: ignore[union-attr]


def test_a_view_before_any_full_walk_starts_one_and_says_so(
        db: Database, log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    trail = watched(db, log)
    monkeypatch.setattr(watch, "VIEW_WAIT_S", 0)

    async def scenario() -> tuple[TrailReport, TrailReport]:
        first = await trail.view()
        await trail.start_full_walk()  # the walk the view started
        return first, await trail.view()

    first, later = asyncio.run(scenario())
    assert first.result is None and first.walking
    assert verdict(later) == (True, None) and not later.walking
    assert later.result is not None and later.result.checked == 30


def test_a_break_found_while_a_full_walk_runs_stands_after_it(
        db: Database, log: AuditLog, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk read entry 33 before it was altered; the tail check, meanwhile, did not:
    the walk's verdict of an intact trail does not clear what the tail check found."""
    trail = watched(db, log)
    altered, resume = threading.Event(), threading.Event()
    original = repository.entries_after

    def read_then_alter(session: UnitOfWork, after_id: int, limit: int | None = None,
                        ) -> list[AuditEntry]:
        entries = original(session, after_id, limit)
        if after_id == 30 and limit is not None:  # the walk's last chunk, 31 to 35
            sql(db, "UPDATE audit_log SET outcome = 'refused' WHERE id = 33")
            altered.set()
            resume.wait(10)
        return entries

    async def scenario() -> TrailReport:
        await trail.full_walk()
        append(db, log, 5)
        monkeypatch.setattr(watch, "CHUNK", 10)
        monkeypatch.setattr(repository, "entries_after", read_then_alter)
        walking = asyncio.create_task(trail.full_walk())
        assert await asyncio.to_thread(altered.wait, 10)
        monkeypatch.setattr(repository, "entries_after", original)
        await trail.check_tail()  # from entry 30: finds 33 altered
        resume.set()
        await walking
        return await trail.view()

    report = asyncio.run(scenario())
    assert verdict(report) == (False, 33)
