"""Console sessions: server-side, peppered, sealed, idle-expiring on what the person does.

The cookie carries a random token; the table holds its peppered digest, so neither a
copy of the database nor a row inserted by hand opens a session. A session starts
at a login `stage` (new password, enrolment, second factor) and opens pages only
once `active`. Disabling the person or "log out everywhere" ends every session.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gateway.identity import repository, users
from gateway.identity.credentials import CredentialKeys, legacy_digest, tampered
from gateway.security.apikeys import Principal
from gateway.settings import ConsoleSettings
from gateway.storage.models import ConsoleSession, User, utcnow
from gateway.storage.unit import UnitOfWork

ACTIVE = "active"
STAGES = ("password", "enrol", "second_factor", ACTIVE)


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    principal: Principal
    csrf_token: str
    token_hash: str
    user_id: str
    method: str  # password | psc


def mac_fields(row: ConsoleSession) -> dict[str, Any]:
    return {"token_hash": row.token_hash, "user_id": row.user_id, "stage": row.stage,
            "method": row.method, "created_at": row.created_at, "ended_at": row.ended_at}


def _seal(row: ConsoleSession, credentials: CredentialKeys) -> None:
    row.row_mac = credentials.mac("console_session", mac_fields(row))


def open_session(session: UnitOfWork, user: User, *, stage: str, method: str,
                 credentials: CredentialKeys) -> tuple[str, ConsoleSession]:
    """A new session at `stage`; returns the cookie's token (never stored) and the row."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    row = ConsoleSession(token_hash=credentials.digest(token), user_id=user.id, stage=stage,
                         method=method, csrf_token=secrets.token_urlsafe(32), created_at=now,
                         last_seen_at=now)
    _seal(row, credentials)
    session.add(row)
    return token, row


def find(session: UnitOfWork, token: str, *, credentials: CredentialKeys,
         limits: ConsoleSettings) -> tuple[ConsoleSession, User] | None:
    """The live session behind a cookie and its person, whatever its stage."""
    row = session.get(ConsoleSession, credentials.digest(token))
    if row is None:
        # a tripwire: no session is stored under the plain SHA-256 any more (migration
        # 0009 dropped them), so a row found that way was inserted by hand
        if session.get(ConsoleSession, legacy_digest(token)) is not None:
            tampered("console_session", "legacy-digest")
        return None
    if row.ended_at is not None:
        return None
    if not credentials.mac_ok("console_session", mac_fields(row), row.row_mac):
        tampered("console_session", row.user_id)
        return None
    now = utcnow()
    idle = limits.idle_timeout_s if row.stage == ACTIVE else limits.pending_login_s
    if (now - row.last_seen_at > timedelta(seconds=idle)
            or now - row.created_at > timedelta(seconds=limits.max_session_s)):
        end_row(session, row, credentials)
        return None
    user = session.get(User, row.user_id)
    if user is None or not users.genuine(user, credentials) or user.disabled_at is not None:
        return None
    return row, user


def resume(session: UnitOfWork, token: str, *, credentials: CredentialKeys,
           limits: ConsoleSettings, touch: bool = True) -> ConsoleUser | None:
    """The person behind an active session; `touch` (a person's own request) keeps it alive,
    the dashboard's background refresh does not."""
    found = find(session, token, credentials=credentials, limits=limits)
    if found is None or found[0].stage != ACTIVE:
        return None
    row, user = found
    if touch:
        row.last_seen_at = utcnow()
        session.add(row)
    return ConsoleUser(users.principal_of(user), row.csrf_token, row.token_hash, user.id,
                       row.method)


def advance(session: UnitOfWork, row: ConsoleSession, stage: str,
            credentials: CredentialKeys) -> None:
    row.stage = stage
    row.last_seen_at = utcnow()
    _seal(row, credentials)
    session.add(row)


def end_row(session: UnitOfWork, row: ConsoleSession, credentials: CredentialKeys) -> None:
    if row.ended_at is None:
        row.ended_at = utcnow()
        _seal(row, credentials)
        session.add(row)


def end(session: UnitOfWork, token_hash: str, credentials: CredentialKeys) -> None:
    row = session.get(ConsoleSession, token_hash)
    if row is not None:
        end_row(session, row, credentials)


def end_all(session: UnitOfWork, user_id: str, credentials: CredentialKeys) -> int:
    """Every open session of this person ends now; returns how many."""
    rows = repository.open_sessions_of(session, user_id)
    for row in rows:
        end_row(session, row, credentials)
    return len(rows)
