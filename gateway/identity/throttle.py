"""Failed console logins, counted before any password is checked, in the database.

Each attempt first takes a place in its client address's window and in its account's
failure count, in a transaction of its own; only then is the password or code
checked, and a success gives the places back. Twenty parallel guesses therefore get
at most the allowed number checked, on one instance or several (the counters are
rows every instance shares). The address is stored only as a keyed hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import case, literal, update
from sqlmodel import col

from gateway.storage.models import LoginThrottle, User, table_of, utcnow
from gateway.storage.unit import UnitOfWork

_THROTTLE = table_of(LoginThrottle)
_USERS = table_of(User)


@dataclass(frozen=True, slots=True)
class AddressWindow:
    failures: int  # attempts counted in this window, this one included
    started_at: datetime
    reported: bool  # the window's aggregate audit entry is written


def take_address_place(session: UnitOfWork, bucket: str, window_s: int) -> AddressWindow:
    """Count one attempt for this address (a new window once the last one is over)."""
    now = utcnow()
    expired = _THROTTLE.c.window_started_at < now - timedelta(seconds=window_s)
    insert = session.insert(_THROTTLE)
    statement = insert.values(bucket=bucket, window_started_at=now, failures=1,
                              unknown_failures=0, reported=False).on_conflict_do_update(
        index_elements=["bucket"],
        set_={
            "failures": case((expired, literal(1)), else_=_THROTTLE.c.failures + 1),
            "window_started_at": case((expired, literal(now, _THROTTLE.c.window_started_at.type)),
                                      else_=_THROTTLE.c.window_started_at),
            "reported": case((expired, literal(False)), else_=_THROTTLE.c.reported),
            "unknown_failures": case((expired, literal(0)),
                                     else_=_THROTTLE.c.unknown_failures),
        },
    ).returning(_THROTTLE.c.failures, _THROTTLE.c.window_started_at, _THROTTLE.c.reported)
    row = session.execute(statement).one()
    return AddressWindow(int(row[0]), row[1], bool(row[2]))


def give_address_place_back(session: UnitOfWork, bucket: str) -> None:
    session.execute(update(_THROTTLE).where(_THROTTLE.c.bucket == bucket,
                                            _THROTTLE.c.failures > 0)
                    .values(failures=_THROTTLE.c.failures - 1))


def first_unknown(session: UnitOfWork, bucket: str) -> bool:
    """Count an attempt naming no account; True for the window's first one."""
    row = session.execute(update(_THROTTLE).where(_THROTTLE.c.bucket == bucket)
                          .values(unknown_failures=_THROTTLE.c.unknown_failures + 1)
                          .returning(_THROTTLE.c.unknown_failures)).first()
    return row is not None and int(row[0]) == 1


def mark_reported(session: UnitOfWork, bucket: str) -> None:
    session.execute(update(_THROTTLE).where(_THROTTLE.c.bucket == bucket)
                    .values(reported=True))


def take_account_place(session: UnitOfWork, user_id: str, lock_after: int) -> int | None:
    """Count one attempt against the account; None when it is locked (or every allowed
    attempt is already taken by attempts in flight): then nothing is checked."""
    statement = (update(_USERS)
                 .where(_USERS.c.id == user_id, _USERS.c.locked_at.is_(None),
                        _USERS.c.failed_logins < lock_after)
                 .values(failed_logins=_USERS.c.failed_logins + 1)
                 .returning(_USERS.c.failed_logins))
    row = session.execute(statement).first()
    return int(row[0]) if row else None


def lock_if_exhausted(session: UnitOfWork, user_id: str, lock_after: int) -> bool:
    """After a failure: lock the account once its count reached the limit."""
    return bool(session.changed(update(_USERS).where(
        _USERS.c.id == user_id, _USERS.c.locked_at.is_(None),
        _USERS.c.failed_logins >= lock_after).values(locked_at=utcnow())))


def clear_account(session: UnitOfWork, user_id: str) -> None:
    """A success: the failures so far are forgotten."""
    session.execute(update(_USERS).where(_USERS.c.id == user_id)
                    .values(failed_logins=0, last_login_at=utcnow()))


def unlock(session: UnitOfWork, user_id: str) -> None:
    session.execute(update(_USERS).where(col(User.id) == user_id)
                    .values(failed_logins=0, locked_at=None))
