"""Console sessions: server-side, idle-expiring, ended at logout or when the key is revoked.

The cookie carries a random token; only its SHA-256 is stored, so a copy of the
database opens no session.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session

from gateway.models import ApiKey, ConsoleSession, utcnow
from gateway.security.apikeys import Principal

IDLE_TIMEOUT = timedelta(minutes=30)
MAX_AGE = timedelta(hours=12)


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    principal: Principal
    csrf_token: str
    token_hash: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(session: Session, principal: Principal) -> tuple[str, str]:
    """A new session for this key; returns the cookie token and the CSRF token."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    session.add(ConsoleSession(token_hash=token_hash(token), key_id=principal.key_id,
                               csrf_token=csrf, created_at=now, last_seen_at=now))
    return token, csrf


def resume(session: Session, token: str) -> ConsoleUser | None:
    """The user behind a cookie, if the session is live and its key still valid."""
    row = session.get(ConsoleSession, token_hash(token))
    now = utcnow()
    if row is None or row.ended_at is not None:
        return None
    if now - row.last_seen_at > IDLE_TIMEOUT or now - row.created_at > MAX_AGE:
        row.ended_at = now
        session.add(row)
        return None
    key = session.get(ApiKey, row.key_id)
    if key is None or key.revoked_at is not None or (key.expires_at and key.expires_at <= now):
        return None
    row.last_seen_at = now
    session.add(row)
    principal = Principal(
        key_id=key.id, role=key.role,  # type: ignore[arg-type]
        finess=key.finess,
        operators=frozenset(key.operators.split(",")) if key.operators else None,
    )
    return ConsoleUser(principal, row.csrf_token, row.token_hash)


def end(session: Session, hashed: str) -> None:
    row = session.get(ConsoleSession, hashed)
    if row is not None and row.ended_at is None:
        row.ended_at = utcnow()
        session.add(row)
