"""Is the database there? Which failures mean "not now" rather than "a bug", and one log
line per outage.

A PostgreSQL restart, a dropped connection, a full disk or a file the process may no
longer write are the gateway's own outages: requests get 503 with `Retry-After` (a
pharmacy's software retries with the same key and finds its claim), never a 500 with a
driver traceback per request. The first failure logs `database.unavailable`, the first
committed write after it `database.recovered`; nothing in between, however many requests
fail. Reads alone do not end an outage: a read-only SQLite file still reads.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import structlog
from sqlalchemy import exc as sa_exc

from gateway.errors import GatewayError
from gateway.storage.models import DatabaseProbe, utcnow
from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)
RETRY_AFTER_S = 2

# SQLite's primary result codes that mean the file cannot be used now, not a bad query:
# BUSY, LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL
_SQLITE_UNAVAILABLE = frozenset({5, 6, 7, 8, 10, 13, 14, 15})


class DatabaseUnavailable(GatewayError):
    status, type, title = 503, "database-unavailable", "The gateway's database is unavailable"

    def __init__(self, reason: str) -> None:
        super().__init__(
            "the gateway cannot reach or write its database; nothing was stored by this "
            "request unless a retry with the same Idempotency-Key finds it",
            headers={"Retry-After": str(RETRY_AFTER_S)}, reason=reason,
        )


def unavailable_reason(error: BaseException | None) -> str | None:
    """A short, data-free name for a failure that means the database is unavailable;
    None for anything else (a constraint, a bad query: those stay bugs).

    The error raised may be a consequence ("no such savepoint" after SQLite rolled a
    full disk's transaction back): the errors it arose from are looked at too."""
    seen: list[BaseException] = []
    while error is not None and len(seen) < 5 and error not in seen:
        if (reason := _own_reason(error)) is not None:
            return reason
        seen.append(error)
        error = error.__cause__ or error.__context__
    return None


def _own_reason(error: BaseException) -> str | None:
    if isinstance(error, DatabaseUnavailable):
        return str(error.extra.get("reason", "unavailable"))
    if isinstance(error, sa_exc.TimeoutError):
        return "connection pool exhausted"
    if not isinstance(error, sa_exc.DBAPIError):
        return None
    original = error.orig
    if isinstance(original, sqlite3.Error):
        code = getattr(original, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _SQLITE_UNAVAILABLE:
            return str(getattr(original, "sqlite_errorname", "SQLITE_ERROR")).lower()
        return None
    if error.connection_invalidated or isinstance(
            error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return f"{type(original).__module__.split('.')[0]} {type(original).__name__}"
    return None


class DatabaseHealth:
    """The outage state, shared by the event loop and the worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self.failures = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, reason: str) -> None:
        with self._lock:
            self.failures += 1
            if self._down_since is not None:
                return
            self._down_since = time.monotonic()
        log.warning("database.unavailable", reason=reason)

    def wrote(self) -> None:
        if self._down_since is None:  # the usual case, without taking the lock
            return
        with self._lock:
            since, self._down_since = self._down_since, None
            failures, self.failures = self.failures, 0
        if since is not None:
            log.warning("database.recovered", outage_s=round(time.monotonic() - since, 1),
                        failures=failures)


def probe_write(session: UnitOfWork) -> None:
    """Rewrite the probe row: what /readyz does while the database is failing."""
    session.merge(DatabaseProbe(slot=1, written_at=utcnow()))
