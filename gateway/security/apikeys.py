"""API keys: random secrets shown once, stored as SHA-256, compared in constant time.

A secret reads `<key_id>.<random>`: the id finds the row, the random part (256
bits) is checked against its hash. The random part's entropy is what makes a
plain SHA-256 sufficient here (there is nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from gateway.domain.identifiers import check_finess
from gateway.models import ApiKey, utcnow

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


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(
    *, role: str, finess: str | None = None, operators: list[str] | None = None,
    label: str | None = None, expires_at: datetime | None = None,
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
        id=key_id, secret_hash=hash_secret(secret), role=role, finess=finess,
        operators=",".join(sorted(set(operators))) if operators else None,
        label=label, created_at=utcnow(), expires_at=expires_at,
    )
    return row, secret


_KEY_COLUMNS = ApiKey.__table__.c  # type: ignore[attr-defined]
_BY_ID = select(_KEY_COLUMNS.id, _KEY_COLUMNS.secret_hash, _KEY_COLUMNS.role,
                _KEY_COLUMNS.finess, _KEY_COLUMNS.operators, _KEY_COLUMNS.revoked_at,
                _KEY_COLUMNS.expires_at).where(_KEY_COLUMNS.id == bindparam("key_id"))


def authenticate(connection: Connection | Session, secret: str) -> Principal | None:
    """The principal for a presented secret, or None (unknown, revoked, expired, wrong).

    One Core query (no ORM session or identity map): it runs on every request."""
    key_id, _, rest = secret.partition(".")
    if not KEY_ID_FORMAT.fullmatch(key_id) or not rest or len(secret) > 200:
        return None
    row = connection.execute(_BY_ID, {"key_id": key_id}).first()
    if row is None:
        hmac.compare_digest(hash_secret(secret), hash_secret("decoy"))  # same work either way
        return None
    if not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
        return None
    now = utcnow()
    if row.revoked_at is not None or (row.expires_at is not None and row.expires_at <= now):
        return None
    return Principal(
        key_id=row.id, role=row.role,  # type: ignore[arg-type]
        finess=row.finess,
        operators=frozenset(row.operators.split(",")) if row.operators else None,
    )


def list_keys(session: Session) -> list[ApiKey]:
    result = session.exec(select(ApiKey).order_by(col(ApiKey.created_at)))
    return list(result.all())


def revoke(session: Session, key_id: str) -> bool:
    row = session.get(ApiKey, key_id)
    if row is None:
        return False
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
    return True


_LIVE = select(_KEY_COLUMNS.revoked_at, _KEY_COLUMNS.expires_at).where(
    _KEY_COLUMNS.id == bindparam("key_id"))


def is_live(connection: Connection | Session, key_id: str) -> bool:
    """Neither revoked nor expired, as of this transaction."""
    row = connection.execute(_LIVE, {"key_id": key_id}).first()
    now = utcnow()
    return row is not None and row.revoked_at is None and (
        row.expires_at is None or row.expires_at > now)


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
