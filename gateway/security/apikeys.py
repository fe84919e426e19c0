"""API keys: machine credentials, shown once, stored as a peppered digest, compared in
constant time, and refused when their row was altered by hand.

A secret reads `<key_id>.<random>`: the id finds the row, the random part (256
bits) is checked against its digest (`CredentialKeys.digest`: HMAC under the
pepper). Each row's MAC covers its id, digest, role, FINESS, operator scope, expiry,
revocation and, while it is set, its suspension: a row inserted, promoted, un-revoked
or un-suspended by hand opens nothing. A suspended key (over a rights budget,
`gateway.security.abuse`) is refused with 403 `key-suspended` until lifted.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.engine import Connection
from sqlmodel import Session

from gateway.domain.identifiers import check_finess
from gateway.errors import Forbidden
from gateway.identity.credentials import CredentialKeys, tampered
from gateway.keys import repository
from gateway.storage.models import ApiKey, utcnow
from gateway.storage.unit import UnitOfWork

Role = Literal["pharmacy", "operations", "admin"]
ROLES: tuple[Role, ...] = ("pharmacy", "operations", "admin")
KEY_ID_PREFIX = "key_"
KEY_ID_FORMAT = re.compile(r"key_[0-9a-f]{16}")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id and what it may touch."""

    key_id: str
    role: Role
    finess: str | None
    operators: frozenset[str] | None  # None: every operator

    def may_operate(self, operator: str) -> bool:
        return self.operators is None or operator in self.operators


class InvalidKeyRequest(ValueError):
    """A key cannot be created as asked."""


class KeySuspended(Forbidden):
    """403, not 401: the pharmacy's software can tell its user to call operations."""

    type, title = "key-suspended", "This key is suspended pending review"


def suspended() -> KeySuspended:
    return KeySuspended("this key is suspended pending review (too many different people "
                        "looked up): ask the gateway's operations team to lift it")


def hash_secret(secret: str) -> str:
    """An in-memory cache key only (`KeyCache`); the database holds the peppered digest."""
    return hashlib.sha256(secret.encode()).hexdigest()


def mac_fields(row: Any) -> dict[str, Any]:
    """What a key row's MAC covers: everything that says what the key may do. The
    suspension only while set: rows sealed before it existed keep their MAC, and a
    suspension cleared by hand still changes what the MAC covers."""
    fields = {"id": row.id, "secret_hash": row.secret_hash, "role": row.role,
              "finess": row.finess, "operators": row.operators,
              "expires_at": row.expires_at, "revoked_at": row.revoked_at}
    if getattr(row, "suspended_at", None) is not None:  # absent from migration 0009's rows
        fields["suspended_at"] = row.suspended_at
        fields["suspension_reason"] = row.suspension_reason
    return fields


def seal(row: ApiKey, credentials: CredentialKeys) -> None:
    row.row_mac = credentials.mac("api_key", mac_fields(row))


def new_key(
    *, role: str, credentials: CredentialKeys, finess: str | None = None,
    operators: list[str] | None = None, label: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Build a key row and its secret; the secret is not kept anywhere."""
    if role not in ROLES:
        raise InvalidKeyRequest(f"role must be one of {', '.join(ROLES)}")
    if role == "pharmacy":
        if not finess:
            raise InvalidKeyRequest("a pharmacy key needs --finess")
        try:
            finess = check_finess(finess)
        except ValueError as exc:
            raise InvalidKeyRequest(f"finess: {exc}") from exc
    elif finess:
        raise InvalidKeyRequest("only a pharmacy key is bound to a FINESS")
    if operators and role != "operations":
        raise InvalidKeyRequest("only an operations key is scoped to operators")
    key_id = KEY_ID_PREFIX + secrets.token_hex(8)
    secret = f"{key_id}.{secrets.token_urlsafe(32)}"
    row = ApiKey(
        id=key_id, secret_hash=credentials.digest(secret), role=role, finess=finess,
        operators=",".join(sorted(set(operators))) if operators else None,
        label=label, created_at=utcnow(), expires_at=expires_at,
    )
    seal(row, credentials)
    return row, secret


def _genuine(row: Any, credentials: CredentialKeys) -> bool:
    """The row is as the gateway wrote it; a mismatch is counted and logged."""
    if credentials.mac_ok("api_key", mac_fields(row), row.row_mac):
        return True
    tampered("api_key", row.id)
    return False


def authenticate(connection: Connection | Session, secret: str,
                 credentials: CredentialKeys) -> Principal | None:
    """The principal for a presented secret, or None (unknown, revoked, expired, wrong,
    or a row altered by hand); KeySuspended for the right secret of a suspended key.

    One Core query (no ORM session or identity map): it runs on every request."""
    key_id, _, rest = secret.partition(".")
    if not KEY_ID_FORMAT.fullmatch(key_id) or not rest or len(secret) > 200:
        return None
    row = repository.key_row(connection, key_id)
    if row is None:
        credentials.matches("0" * 64, secret)  # the same work either way
        return None
    # the MAC first: a row inserted or altered by hand is reported whatever secret comes
    if not _genuine(row, credentials) or not credentials.matches(row.secret_hash, secret):
        return None
    now = utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    if row.suspended_at is not None:
        raise suspended()
    return Principal(
        key_id=row.id, role=row.role,
        finess=row.finess,
        operators=frozenset(row.operators.split(",")) if row.operators else None,
    )


def revoke(session: UnitOfWork, key_id: str, credentials: CredentialKeys) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        seal(row, credentials)
        session.add(row)
    return True


def is_live(connection: Connection | Session, key_id: str,
            credentials: CredentialKeys) -> bool:
    """Neither revoked nor expired nor altered by hand, as of this transaction; a
    suspended key raises KeySuspended."""
    return row_is_live(repository.key_row(connection, key_id), credentials)


def row_is_live(row: Any, credentials: CredentialKeys) -> bool:
    """`is_live` of a key row already read in this transaction (None: no such key)."""
    now = utcnow()
    live = row is not None and _genuine(row, credentials) and row.revoked_at is None and (
        row.expires_at is None or row.expires_at > now)
    if live and row is not None and row.suspended_at is not None:
        raise suspended()
    return live


def suspend(session: UnitOfWork, key_id: str, reason: str,
            credentials: CredentialKeys) -> bool:
    """Suspend pending review; False when it already was (the first reason stays)."""
    row = session.get(ApiKey, key_id)
    if row is None or row.suspended_at is not None:
        return False
    row.suspended_at, row.suspension_reason = utcnow(), reason[:200]
    seal(row, credentials)
    session.add(row)
    return True


def lift(session: UnitOfWork, key_id: str,
         credentials: CredentialKeys) -> tuple[ApiKey, bool] | None:
    """Lift a suspension: the row and whether it was suspended; None for no such key."""
    row = session.get(ApiKey, key_id)
    if row is None:
        return None
    was_suspended = row.suspended_at is not None
    if was_suspended:
        row.suspended_at = row.suspension_reason = None
        seal(row, credentials)
        session.add(row)
    return row, was_suspended


class KeyCache:
    """Principals of recently seen secrets, for a path that confirms the key again in its
    own transaction (`is_live`): keys never change, except by revocation or expiry, so
    the cache spares a read, never a check. Bounded; keyed by the secret's hash."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._by_hash: dict[str, Principal] = {}

    def get(self, secret: str) -> Principal | None:
        return self._by_hash.get(hash_secret(secret))

    def put(self, secret: str, principal: Principal) -> None:
        if len(self._by_hash) >= self.max_entries:
            self._by_hash.pop(next(iter(self._by_hash)))  # the oldest entry
        self._by_hash[hash_secret(secret)] = principal

    def forget(self, key_id: str) -> None:
        self._by_hash = {h: p for h, p in self._by_hash.items() if p.key_id != key_id}
