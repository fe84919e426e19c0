"""Moving records off retired data keys, in small batches, while the gateway serves.

After `gateway keys rotate-data-key` retired every DEK, `--reencrypt` walks each
encrypted column (`ENCRYPTED_COLUMNS`) in id order, a batch per short transaction:
a record whose blob names a retired DEK (or the master key directly, the format
before envelopes) is decrypted and encrypted again under its scope's fresh DEK.
Columns under the master key alone (`users.profile_enc`: names and e-mails) are
encrypted again under the current master, so the old one can be dropped.
The row is updated only if its blob is still the one read (compare-and-set), so a
record the gateway rewrote meanwhile is neither lost nor encrypted twice; a blob
that already names a current DEK is skipped. Interrupted, it starts again where
records are left: every finished batch is committed.

Instances notice a retirement within `CURRENT_RECHECK_S` and may write a record
on a retired DEK until then: passes repeat until `settle_s` after the retirement
and one pass finds nothing left to move. Then the retired DEKs no record uses are
shredded (`gateway.storage.retention.shred_retired`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, func, or_, select, text, update
from sqlalchemy.engine import Row
from sqlmodel import col

from gateway.claims.payload import payload_context
from gateway.rights.repository import cache_context
from gateway.security.crypto import BLOB_VERSION, Cipher, DecryptionError
from gateway.security.envelope import CURRENT_RECHECK_S
from gateway.storage.db import Database, is_sqlite
from gateway.storage.models import (
    Claim,
    DataKey,
    RightsCacheEntry,
    User,
    table_of,
    utcnow,
)
from gateway.storage.unit import UnitOfWork

SETTLE_S = 3 * CURRENT_RECHECK_S  # every running instance has stopped using retired DEKs
BATCH = 200
MAX_PASSES = 20


@dataclass(frozen=True, slots=True)
class EncryptedColumn:
    """A column of blobs under scoped DEKs: how to bind each blob to its row, and its scope
    when it predates envelopes (encrypted with the master key directly)."""

    name: str
    table: Table
    blob: str
    context: Callable[[Row[Any]], str]
    legacy_scope: Callable[[Row[Any]], str] | None  # None: the master key alone, no DEK
    extra: tuple[str, ...]  # further columns `context` and `legacy_scope` read


ENCRYPTED_COLUMNS = (
    EncryptedColumn(
        "claims.payload_enc", table_of(Claim), "payload_enc",
        lambda row: payload_context(row.id),
        lambda row: f"claims:{row.finess}:{row.created_at:%Y-%m}", ("finess", "created_at")),
    EncryptedColumn(
        "rights_cache.answer_enc", table_of(RightsCacheEntry), "answer_enc",
        lambda row: cache_context(row.finess, row.beneficiary_hash, row.insurer_number),
        lambda row: f"rights:{row.as_of:%Y-%m}",
        ("finess", "beneficiary_hash", "insurer_number", "as_of")),
    EncryptedColumn(
        "users.profile_enc", table_of(User), "profile_enc",
        lambda row: f"user:{row.id}", None, ()),
)


@dataclass(slots=True)
class Tally:
    reencrypted: int = 0
    skipped: int = 0  # already on a current DEK, or rewritten by the gateway meanwhile
    unreadable: int = 0  # altered, or its DEK shredded: left as it is

    def add(self, other: Tally) -> None:
        self.reencrypted += other.reencrypted
        self.skipped += other.skipped
        self.unreadable += other.unreadable


@dataclass(frozen=True, slots=True)
class Batch:
    seen: int
    last_id: Any
    tally: Tally


def retired_keys(session: UnitOfWork) -> dict[str, str]:
    """Live retired DEKs: id -> scope."""
    rows = session.execute(select(col(DataKey.id), col(DataKey.scope)).where(
        col(DataKey.retired_at).is_not(None), col(DataKey.wrapped).is_not(None))).all()
    return {row.id: row.scope for row in rows}


def last_retirement(session: UnitOfWork) -> datetime | None:
    return session.execute(select(func.max(DataKey.retired_at)).where(
        col(DataKey.wrapped).is_not(None))).scalar_one_or_none()


def _candidates(column: EncryptedColumn, retired: Sequence[str]) -> Any:
    """Rows on a retired DEK, or on the master key directly (no DEK, not purged)."""
    table = column.table
    blob = table.c[column.blob]
    if column.legacy_scope is None:
        return func.length(blob) > 0  # few rows: which master, the blob says
    legacy = and_(table.c.data_key_id.is_(None), func.length(blob) > 0)
    return or_(table.c.data_key_id.in_(list(retired)), legacy) if retired else legacy


def reencrypt_batch(db: Database, cipher: Cipher, column: EncryptedColumn,
                    retired: dict[str, str], *, after: Any, size: int) -> Batch:
    """One short transaction: up to `size` rows after `after`, in id order."""
    table = column.table

    def work(session: UnitOfWork) -> Batch:
        sqlite = is_sqlite(db.url)
        if sqlite:  # the old ciphertext must not linger in free pages
            session.execute(text("PRAGMA secure_delete=ON"))
        query = select(table.c.id, table.c[column.blob], *(table.c[n] for n in column.extra)
                       ).where(_candidates(column, list(retired)))
        if after is not None:
            query = query.where(table.c.id > after)
        rows = session.execute(query.order_by(table.c.id).limit(size)).all()
        tally = Tally()
        for row in rows:
            _move(session, cipher, column, retired, row, tally)
        if sqlite:
            session.execute(text("PRAGMA secure_delete=OFF"))
        return Batch(len(rows), rows[-1].id if rows else after, tally)

    return db.write_now(work)


def _move(session: UnitOfWork, cipher: Cipher, column: EncryptedColumn, retired: dict[str, str],
          row: Row[*tuple[Any, ...]], tally: Tally) -> None:
    blob: bytes = row[1]
    dek_id = cipher.data_key_of(blob)
    if (dek_id is not None and dek_id not in retired) or cipher.on_current_master(blob):
        tally.skipped += 1  # already on a current DEK or master
        return
    if dek_id is None and blob[:1] != bytes([BLOB_VERSION]):
        tally.unreadable += 1
        return
    context = column.context(row)
    try:
        plaintext = cipher.decrypt(blob, context=context)
    except DecryptionError:
        tally.unreadable += 1
        return
    scope = (retired[dek_id] if dek_id is not None
             else column.legacy_scope(row) if column.legacy_scope is not None else None)
    fresh = cipher.encrypt(plaintext, context=context, scope=scope)
    table = column.table
    values: dict[str, Any] = {column.blob: fresh}
    if column.legacy_scope is not None:
        values["data_key_id"] = cipher.data_key_of(fresh)
    if session.changed(update(table).where(
            table.c.id == row.id, table.c[column.blob] == blob).values(values)):
        tally.reencrypted += 1
    else:
        tally.skipped += 1  # the gateway rewrote or purged it meanwhile


def reencrypt_all(
    db: Database, cipher: Cipher, *, batch_size: int = BATCH, settle_s: float = SETTLE_S,
    echo: Callable[[str], None] = print, columns: Sequence[EncryptedColumn] = ENCRYPTED_COLUMNS,
    sleep: Callable[[float], None] = time.sleep,
) -> Tally:
    """Passes over every column until, `settle_s` after the last retirement, one finds
    nothing left to move; prints progress after each batch."""
    total = Tally()
    for number in range(1, MAX_PASSES + 1):
        retired = db.read_now(retired_keys)
        moved, total.unreadable = 0, 0  # unreadable rows are met again on every pass
        for column in columns:
            after, done = None, Tally()
            while True:
                batch = reencrypt_batch(db, cipher, column, retired, after=after, size=batch_size)
                if batch.seen == 0:
                    break
                after = batch.last_id
                done.add(batch.tally)
                echo(f"pass {number} {column.name}: {done.reencrypted} re-encrypted, "
                     f"{done.skipped} skipped, {done.unreadable} unreadable (up to id {after})")
            moved += done.reencrypted
            total.add(done)
        wait = _settle_left(db, settle_s)
        if wait <= 0 and moved == 0:
            return total
        if wait > 0:
            echo(f"waiting {wait:.0f} s for running gateways to stop using retired keys")
            sleep(wait)
    echo(f"records still on retired keys after {MAX_PASSES} passes: run it again")
    return total


def _settle_left(db: Database, settle_s: float) -> float:
    retired_at = db.read_now(last_retirement)
    if retired_at is None:
        return 0.0
    return (retired_at + timedelta(seconds=settle_s) - utcnow()).total_seconds()
