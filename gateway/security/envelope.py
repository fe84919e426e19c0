"""Envelope encryption: a data key (DEK) per scope, wrapped by the master key.

A scope is a pharmacy and a month for claims (`claims:{finess}:{YYYY-MM}`) and a
month for the rights cache (`rights:{YYYY-MM}`). Each DEK is stored in `data_keys`
wrapped (AES-256-GCM) by the master `data_key`, with the master's key id; the
previous master keys still unwrap. Erasing a row's wrapped key (crypto-shredding)
leaves every record it encrypted unreadable wherever that row is gone (not in a
backup taken before: see docs/SECURITY.md).

Rotation (`gateway keys rotate-data-key`) re-wraps every live DEK under the current
master and retires it (`retired_at`): a retired DEK still decrypts, but new records
get a fresh DEK, so a copy of `data_keys` plus the old master reads nothing written
after the rotation. `gateway.security.reencrypt` then moves old records to fresh
DEKs and shreds the retired ones.

Unwrapped DEKs are cached in memory, re-checked against the table every
`recheck_s` so a key shredded by another instance stops working here too. The DEK a
scope's new records use is looked up again every `current_recheck_s` (5 s): that is
how long a running instance may go on using a DEK another process retired. A new
DEK is written in the caller's own write transaction when the calling thread is
inside one (SQLite has a single writer: a second transaction would wait for the
first, which waits for us), and in its own short transaction otherwise; engine
events tell which. A DEK written inside a transaction that rolls back vanishes
with it and is never cached.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import event, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlmodel import col

from gateway.security.crypto import DecryptionError, key_id
from gateway.security.keyring import KeyRing
from gateway.storage.db import Database
from gateway.storage.models import DataKey, table_of, utcnow
from gateway.storage.unit import UnitOfWork

T = TypeVar("T")
WRAP_NONCE_BYTES = 12
RECHECK_S = 300.0
CURRENT_RECHECK_S = 5.0  # at most this long after a rotation, new records use a retired DEK
DATA_KEYS = table_of(DataKey)


def master_kid(master: bytes) -> str:
    return key_id(master).hex()


def new_dek_id() -> str:
    return f"dek_{secrets.token_hex(12)}"


def _wrap_aad(dek_id: str, scope: str) -> bytes:
    return f"gateway-dek|{dek_id}|{scope}".encode()


class MasterKeys:
    """The current master key wraps; any master of the ring unwraps."""

    def __init__(self, keyring: KeyRing) -> None:
        self.current_kid = master_kid(keyring.data_key)
        self._by_kid = {
            master_kid(key): AESGCM(key) for key in (keyring.data_key, *keyring.previous_data_keys)
        }

    def knows(self, kid: str) -> bool:
        return kid in self._by_kid

    def wrap(self, dek_id: str, scope: str, dek: bytes) -> bytes:
        nonce = os.urandom(WRAP_NONCE_BYTES)
        return nonce + self._by_kid[self.current_kid].encrypt(nonce, dek, _wrap_aad(dek_id, scope))

    def unwrap(self, dek_id: str, scope: str, wrapped: bytes | None, kid: str) -> bytes:
        if wrapped is None:
            raise DecryptionError(f"data key {dek_id} was shredded")
        aead = self._by_kid.get(kid)
        if aead is None:
            raise DecryptionError(f"data key {dek_id} is wrapped by unknown master key {kid}")
        try:
            nonce, sealed = wrapped[:WRAP_NONCE_BYTES], wrapped[WRAP_NONCE_BYTES:]
            return aead.decrypt(nonce, sealed, _wrap_aad(dek_id, scope))
        except InvalidTag as exc:
            raise DecryptionError(f"data key {dek_id} altered") from exc


def rewrap_data_keys(session: UnitOfWork, keyring: KeyRing) -> int:
    """Re-wrap every live DEK not yet under the current master; records stay as they are."""
    masters = MasterKeys(keyring)
    rows = session.scalars(select(DataKey).where(
        col(DataKey.wrapped).is_not(None), col(DataKey.master_kid) != masters.current_kid,
    )).all()
    for row in rows:
        dek = masters.unwrap(row.id, row.scope, row.wrapped, row.master_kid)
        row.wrapped = masters.wrap(row.id, row.scope, dek)
        row.master_kid = masters.current_kid
        session.add(row)
    return len(rows)


def retire_data_keys(session: UnitOfWork, *, now: datetime) -> int:
    """Retire every live DEK: still decrypts, never encrypts again (new records get new DEKs)."""
    return session.changed(
        update(DataKey).where(col(DataKey.wrapped).is_not(None), col(DataKey.retired_at).is_(None))
        .values(retired_at=now)
    )


def shred(session: UnitOfWork, dek_ids: Iterable[str], *, now: datetime) -> int:
    """Erase the wrapped keys: what they encrypted can no longer be read by anyone."""
    ids = list(dek_ids)
    if not ids:
        return 0
    return session.changed(
        update(DataKey).where(col(DataKey.id).in_(ids), col(DataKey.wrapped).is_not(None))
        .values(wrapped=None, shredded_at=now)
    )


@dataclass(slots=True)
class _Cached:
    aead: AESGCM
    checked_at: float


@dataclass(slots=True)
class _Txn:
    """The calling thread's open write transaction, and DEKs created inside it."""

    conn: Connection
    by_scope: dict[str, str] = field(default_factory=dict)
    keys: dict[str, AESGCM] = field(default_factory=dict)


class DataKeyStore:
    """Finds, creates and caches DEKs for the Cipher; safe to use from any thread."""

    def __init__(self, db: Database, keyring: KeyRing, *, recheck_s: float = RECHECK_S,
                 current_recheck_s: float = CURRENT_RECHECK_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        self._masters = MasterKeys(keyring)
        self._recheck_s = recheck_s
        self._current_recheck_s = current_recheck_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, _Cached] = {}
        # scope -> the DEK new records use, and when the table last said it was not retired
        self._current: dict[str, tuple[str, float]] = {}
        self._local = threading.local()
        event.listen(db.engine, "begin", self._on_begin)
        event.listen(db.engine, "commit", self._on_end)
        event.listen(db.engine, "rollback", self._on_end)

    def key_for_scope(self, scope: str) -> tuple[str, AESGCM]:
        txn = self._joined()
        if txn is not None and scope in txn.by_scope:
            dek_id = txn.by_scope[scope]
            return dek_id, txn.keys[dek_id]
        with self._lock:
            dek_id, picked_at = self._current.get(scope, ("", 0.0))
            cached = self._keys.get(dek_id)
        if (cached is not None and self._fresh(cached)
                and self._clock() - picked_at < self._current_recheck_s):
            return dek_id, cached.aead
        if txn is not None:
            return self._find_or_create(txn.conn, scope, txn)
        return self._db.write_now(lambda s: self._find_or_create(s.connection(), scope, None))

    def key(self, dek_id: str) -> AESGCM:
        txn = self._joined()
        if txn is not None and dek_id in txn.keys:
            return txn.keys[dek_id]
        with self._lock:
            cached = self._keys.get(dek_id)
        if cached is not None and self._fresh(cached):
            return cached.aead
        row = self._read(lambda conn: conn.execute(
            select(DATA_KEYS).where(DATA_KEYS.c.id == dek_id)).first())
        if row is None or row.wrapped is None:
            self.forget([dek_id])
            raise DecryptionError(f"data key {dek_id} unknown or shredded")
        aead = AESGCM(self._masters.unwrap(row.id, row.scope, row.wrapped, row.master_kid))
        self._remember(row.id, aead)
        return aead

    def forget(self, dek_ids: Iterable[str]) -> None:
        """Drop DEKs from the cache (after shredding them)."""
        gone = set(dek_ids)
        with self._lock:
            for dek_id in gone:
                self._keys.pop(dek_id, None)
            for scope in [s for s, (d, _) in self._current.items() if d in gone]:
                del self._current[scope]

    def _find_or_create(self, conn: Connection, scope: str, txn: _Txn | None) -> tuple[
            str, AESGCM]:
        rows = conn.execute(
            select(DATA_KEYS).where(DATA_KEYS.c.scope == scope, DATA_KEYS.c.wrapped.is_not(None),
                                    DATA_KEYS.c.retired_at.is_(None))
            .order_by(DATA_KEYS.c.created_at.desc())
        ).all()
        usable: Row[Any] | None = next(
            (r for r in rows if self._masters.knows(r.master_kid)), None)
        if usable is not None:
            aead = AESGCM(self._masters.unwrap(
                usable.id, usable.scope, usable.wrapped, usable.master_kid))
            self._remember(usable.id, aead, scope=scope)
            return usable.id, aead
        dek, dek_id = AESGCM.generate_key(bit_length=256), new_dek_id()
        conn.execute(insert(DATA_KEYS).values(
            id=dek_id, scope=scope, wrapped=self._masters.wrap(dek_id, scope, dek),
            master_kid=self._masters.current_kid, created_at=utcnow(),
        ))
        aead = AESGCM(dek)
        if txn is None:
            self._remember(dek_id, aead, scope=scope)  # its own transaction commits it
        else:
            txn.by_scope[scope], txn.keys[dek_id] = dek_id, aead  # cached once committed
        return dek_id, aead

    def _read(self, work: Callable[[Connection], T]) -> T:
        txn = self._joined()
        if txn is not None:
            return work(txn.conn)
        return self._db.read_now(lambda session: work(session.connection()))

    def _remember(self, dek_id: str, aead: AESGCM, *, scope: str | None = None) -> None:
        with self._lock:
            now = self._clock()
            self._keys[dek_id] = _Cached(aead, now)
            if scope is not None:
                self._current[scope] = (dek_id, now)

    def _fresh(self, cached: _Cached) -> bool:
        return self._clock() - cached.checked_at < self._recheck_s

    def _joined(self) -> _Txn | None:
        txn: _Txn | None = getattr(self._local, "txn", None)
        if txn is None or txn.conn.closed or not txn.conn.in_transaction():
            return None
        return txn

    def _on_begin(self, conn: Connection) -> None:
        if conn.get_execution_options().get("sqlite_begin", "IMMEDIATE") != "DEFERRED":
            self._local.txn = _Txn(conn)  # a writer (readers are never joined)

    def _on_end(self, conn: Connection) -> None:
        txn: _Txn | None = getattr(self._local, "txn", None)
        if txn is not None and txn.conn is conn:
            self._local.txn = None
