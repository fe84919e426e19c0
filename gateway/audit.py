"""The audit trail: who did what to which object, and how it ended, chained by hash.

Written in the same transaction as the action it records; never raw personal
data (ids, counts and filters only). Each entry's hash covers the previous
entry's hash and its own canonical form, so changing, deleting or reordering an
entry breaks the chain from there on; `verify` walks it and names the first
broken entry. Appends are serialised (IMMEDIATE transaction on SQLite, an
advisory lock on PostgreSQL) so the chain never forks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from gateway.models import AuditEntry, utcnow
from gateway.security.apikeys import Principal

GENESIS = "0" * 64
AUDIT_LOCK = 0x61756469  # "audi"


def canonical(entry: AuditEntry) -> str:
    return json.dumps(
        [entry.id, entry.at.isoformat(timespec="microseconds"), entry.actor, entry.role,
         entry.action, entry.object_id, entry.outcome, entry.details_json],
        separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    return hashlib.sha256(f"{prev_hash}|{canonical(entry)}".encode()).hexdigest()


def audit(
    session: Session, actor: Principal, action: str, *, object_id: str | None = None,
    outcome: str = "ok", **details: Any,
) -> AuditEntry:
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": AUDIT_LOCK})
    last = session.exec(select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(1)).first()
    entry = AuditEntry(
        at=utcnow(), actor=actor.key_id, role=actor.role, action=action, object_id=object_id,
        outcome=outcome, details_json=json.dumps(details, sort_keys=True, default=str)[:4000],
        prev_hash=last.entry_hash if last else GENESIS,
    )
    session.add(entry)
    session.flush()  # the id is part of what the hash covers
    entry.entry_hash = chain_hash(entry.prev_hash, entry)
    session.add(entry)
    return entry


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    checked: int
    first_broken_id: int | None = None
    problem: str | None = None


def verify_entries(entries: Iterable[AuditEntry]) -> Verification:
    """Walk the chain in id order; the first entry that does not fit is reported."""
    previous_hash, previous_id, checked = GENESIS, 0, 0
    for entry in entries:
        entry_id = entry.id or 0
        if entry.prev_hash != previous_hash:
            problem = ("an entry before it is missing, or it was moved"
                       if entry_id != previous_id + 1 else "its link to the previous entry "
                       "was altered")
            return Verification(False, checked, entry_id, problem)
        if entry.entry_hash != chain_hash(entry.prev_hash, entry):
            return Verification(False, checked, entry_id, "entry altered")
        previous_hash, previous_id = entry.entry_hash, entry_id
        checked += 1
    return Verification(True, checked)


def verify(session: Session) -> Verification:
    return verify_entries(session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all())
