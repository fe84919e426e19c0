"""The audit trail: who did what to which object, and how it ended, chained and sealed.

Written in the same transaction as the action it records; never raw personal
data (ids, counts and filters only). Each entry's hash covers the previous
entry's hash and its own canonical form, so changing, deleting or reordering an
entry breaks the chain from there on. Each entry is also sealed with
HMAC-SHA256(audit_key, entry_hash): someone with database access but without the
key cannot append an entry, even with a correct SHA-256 chain. Appends are
serialised (IMMEDIATE transaction on SQLite, an advisory lock on PostgreSQL) so
the chain never forks. Signed heads (`gateway.audit.heads`) catch truncation.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.audit import repository
from gateway.security.apikeys import Principal
from gateway.security.keyring import KEY_BYTES, load_audit_key
from gateway.settings import Settings
from gateway.storage.models import AuditEntry, new_row, utcnow
from gateway.storage.unit import UnitOfWork

GENESIS = "0" * 64
AUDIT_LOCK = 0x61756469  # "audi"
SYSTEM = Principal(key_id="system", role="admin", finess=None, operators=None)


def canonical(entry: AuditEntry) -> str:
    return json.dumps(
        [entry.id, entry.at.isoformat(timespec="microseconds"), entry.actor, entry.role,
         entry.action, entry.object_id, entry.outcome, entry.details_json],
        separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    return hashlib.sha256(f"{prev_hash}|{canonical(entry)}".encode()).hexdigest()


def locked_head(session: UnitOfWork) -> tuple[int, str] | None:
    """The chain's head as (id, hash), its writers serialised until this transaction ends
    (an advisory lock on PostgreSQL, taken with the read; SQLite's IMMEDIATE transaction
    already does). Two columns, not a whole row: this is on every claim. An entry staged
    earlier in this transaction is the head (its append took the lock)."""
    if staged := session.staged(AuditEntry):
        session.lock(AUDIT_LOCK)
        return int(staged[-1].id or 0), staged[-1].entry_hash
    if not session.defers:
        session.flush()  # an entry added earlier in this unit of work is the head
    return repository.stored_head(session, AUDIT_LOCK)


# What an append reads first, for a deferred work to give its write group beforehand
HEAD_AHEAD = repository.head_ahead(AUDIT_LOCK)


def cli_actor() -> Principal:
    """The shell user running a command, as an audit actor (`cli:<user>`)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        user = "unknown"
    return Principal(key_id=f"cli:{user}"[:32], role="admin", finess=None, operators=None)


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    problem: str | None = None


def walk(entries: Iterable[AuditEntry], seal: Callable[[str], str] | None, *,
         after: tuple[int, str] = (0, GENESIS), checked: int = 0) -> Verification:
    """Walk the chain in id order; the first entry that does not fit is reported. `after`:
    the entries follow this (id, hash), already verified with `checked` others."""
    previous_id, previous_hash = after
    for entry in entries:
        entry_id = entry.id or 0
        if entry.prev_hash != previous_hash:
            if entry_id > previous_id + 1:
                return Verification(False, checked, previous_id + 1,
                                    f"missing: deleted (entry {entry_id} no longer links "
                                    f"to entry {previous_id})")
            return Verification(False, checked, entry_id,
                                f"moved or altered: it does not follow entry {previous_id}")
        if entry.entry_hash != chain_hash(entry.prev_hash, entry):
            return Verification(False, checked, entry_id, "altered: its hash does not match")
        if seal is not None and not hmac.compare_digest(entry.entry_mac or "",
                                                        seal(entry.entry_hash)):
            return Verification(False, checked, entry_id,
                                "not sealed by the gateway: appended by hand or forged")
        previous_hash, previous_id = entry.entry_hash, entry_id
        checked += 1
    return Verification(True, checked)


class AuditLog:
    """Appends sealed entries and checks them; built once from the audit key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"the audit key must be {KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def from_settings(cls, settings: Settings) -> AuditLog:
        return cls(load_audit_key(settings))

    def seal(self, entry_hash: str) -> str:
        return hmac.new(self._key, entry_hash.encode(), hashlib.sha256).hexdigest()

    def append(
        self, session: UnitOfWork, actor: Principal, action: str, *,
        object_id: str | None = None, outcome: str = "ok", **details: Any,
    ) -> AuditEntry:
        """One entry in the caller's transaction: ids, counts and filters only."""
        last = locked_head(session)
        entry = new_row(
            AuditEntry,
            # the id is part of what the hash covers: chosen here, under the lock, so the
            # row is written by one INSERT (the database role may be INSERT-only) and ids
            # stay contiguous (a gap is a deleted entry)
            id=last[0] + 1 if last else 1,
            at=utcnow(), actor=actor.key_id, role=actor.role, action=action,
            object_id=object_id, outcome=outcome,
            details_json=json.dumps(details, sort_keys=True, default=str)[:4000],
            prev_hash=last[1] if last else GENESIS,
        )
        entry.entry_hash = chain_hash(entry.prev_hash, entry)
        entry.entry_mac = self.seal(entry.entry_hash)
        session.add(entry)
        return entry

    def system(self, session: UnitOfWork, action: str, object_id: str | None = None, *,
               outcome: str = "ok", **details: Any) -> AuditEntry:
        """An entry for what the gateway does on its own behalf (drain, purge, receipts)."""
        return self.append(session, SYSTEM, action, object_id=object_id, outcome=outcome,
                           **details)

    def verify_entries(self, entries: Iterable[AuditEntry]) -> Verification:
        return walk(entries, self.seal)

    def verify_chain(self, session: UnitOfWork) -> Verification:
        return self.verify_entries(repository.entries(session))


def audit(
    session: UnitOfWork, actor: Principal, action: str, *, log: AuditLog,
    object_id: str | None = None, outcome: str = "ok", **details: Any,
) -> AuditEntry:
    """`log.append(...)` as a function, for call sites that prefer one."""
    return log.append(session, actor, action, object_id=object_id, outcome=outcome, **details)



def verify(session: UnitOfWork) -> Verification:
    """Hashes and links only, without the key: a quick look. The full check, with seals and
    signed heads, is `gateway.audit.heads.verify_trail` (what `gateway audit verify` runs)."""
    return walk(repository.entries(session), None)
