"""Every query of the webhooks: the cursor (with its lease) and the events after it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func
from sqlmodel import col, select

from gateway.storage.models import Event, WebhookCursor
from gateway.storage.unit import UnitOfWork

MAX_ERROR_CHARS = 500


def webhook_key(finess: str, url: str) -> str:
    """Stable across restarts and instances; changing the url starts a new cursor."""
    return hashlib.sha256(f"{finess}\n{url}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Pending:
    last_event_id: int
    attempts: int
    next_attempt_at: datetime | None
    events: list[Event]
    complete: bool  # no `events.id` is missing between the cursor and the last event


def take_lease(
    session: UnitOfWork, *, key: str, finess: str, owner: str, now: datetime, lease_s: float
) -> bool:
    """Create the cursor at the newest event if new, then hold it unless another instance does."""
    cursor = session.get(WebhookCursor, key, with_for_update=True)
    if cursor is None:
        newest = session.exec(select(func.max(Event.id))).one() or 0
        cursor = WebhookCursor(key=key, finess=finess, last_event_id=newest, updated_at=now)
    elif cursor.lease_owner not in (None, owner) and (
        cursor.lease_until is not None and cursor.lease_until > now
    ):
        return False
    cursor.lease_owner = owner
    cursor.lease_until = now + timedelta(seconds=lease_s)
    session.add(cursor)
    return True


def pending(session: UnitOfWork, *, key: str, finess: str, limit: int,
            now: datetime | None = None) -> Pending | None:
    """The pharmacy's events after the cursor, oldest first; None if the cursor is gone.
    While the receiver's next attempt is not due yet (after `now`), none are read: the
    completeness count covers every pharmacy's events since the cursor, which grow for
    as long as the receiver keeps failing."""
    cursor = session.get(WebhookCursor, key)
    if cursor is None:
        return None
    if now is not None and cursor.next_attempt_at is not None and cursor.next_attempt_at > now:
        return Pending(cursor.last_event_id, cursor.attempts, cursor.next_attempt_at, [],
                       complete=True)
    events = list(session.exec(
        select(Event).where(col(Event.finess) == finess, col(Event.id) > cursor.last_event_id)
        .order_by(col(Event.id)).limit(limit)
    ).all())
    complete = True
    if events:
        last = events[-1].id or 0
        present = session.exec(select(func.count()).select_from(Event).where(
            col(Event.id) > cursor.last_event_id, col(Event.id) <= last)).one()
        complete = present == last - cursor.last_event_id
    return Pending(cursor.last_event_id, cursor.attempts, cursor.next_attempt_at, events,
                   complete)


def _owned(session: UnitOfWork, key: str, owner: str) -> WebhookCursor | None:
    cursor = session.get(WebhookCursor, key, with_for_update=True)
    return cursor if cursor is not None and cursor.lease_owner == owner else None


def delivered(session: UnitOfWork, *, key: str, owner: str, event_id: int, now: datetime) -> bool:
    """Move the cursor past an acknowledged event; False if this instance lost the lease."""
    cursor = _owned(session, key, owner)
    if cursor is None:
        return False
    cursor.last_event_id = max(cursor.last_event_id, event_id)
    cursor.attempts = 0
    cursor.next_attempt_at = None
    cursor.last_error = None
    cursor.updated_at = now
    session.add(cursor)
    return True


def failed(
    session: UnitOfWork, *, key: str, owner: str, error: str, now: datetime,
    delay_for: Callable[[int], float],
) -> int:
    """Count a failed attempt and schedule the next one; the number of attempts so far."""
    cursor = _owned(session, key, owner)
    if cursor is None:
        return 0
    cursor.attempts += 1
    cursor.next_attempt_at = now + timedelta(seconds=delay_for(cursor.attempts))
    cursor.last_error = error[:MAX_ERROR_CHARS]
    cursor.updated_at = now
    session.add(cursor)
    return cursor.attempts
