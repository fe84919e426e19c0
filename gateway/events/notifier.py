"""Long-polls woken by new events, not by polling the database.

Every event row is written through `claims.repository.add_event`, which calls `note`:
the pharmacy is remembered in the session. After the commit, the hub of the app that
owns the engine wakes this instance's waiters of those pharmacies. Other instances are
woken by their LISTEN connection (PostgreSQL) or by Redis (`gateway.events.relay`). On
PostgreSQL the notification is sent by a trigger on `events` (migration 0020), with
the insert itself: delivered at commit, never for a rollback, once per pharmacy and
transaction, and no statement of the writer's own (one cost a round trip per write
group).

A wake-up only makes a waiter read again: a spurious one costs a query, a lost one is
caught by the waiter's slow re-check (`gateway.events.service.RECHECK_S`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)
KEY = "event_finess"  # session.info: pharmacies with new events in this transaction
CHANNEL = "gateway_events"  # PostgreSQL: per database, so per deployment (0020)


def note(session: UnitOfWork, finess: str) -> None:
    """An event of this pharmacy is written in this session's transaction."""
    noted: set[str] | None = session.info.get(KEY)
    if noted is None:
        noted = session.info[KEY] = set()
    if finess in noted:
        return
    noted.add(finess)


class EventHub:
    """This instance's waiting long-polls, by pharmacy; woken after commit or by a relay."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.committed: list[Callable[[tuple[str, ...]], None]] = []  # relays publishing

    def install(self) -> None:
        """Listen to commits (all sessions; ours are told apart by their engine)."""
        self._loop = asyncio.get_running_loop()
        event.listen(Session, "after_commit", self._after_commit)

    def uninstall(self) -> None:
        if event.contains(Session, "after_commit", self._after_commit):
            event.remove(Session, "after_commit", self._after_commit)
        self._loop = None

    @contextmanager
    def listening(self, finess: str) -> Iterator[asyncio.Event]:
        """Set on each wake-up for this pharmacy: subscribe before reading, so that no
        event committed between the read and the wait is missed."""
        woken = asyncio.Event()
        self._waiters.setdefault(finess, set()).add(woken)
        try:
            yield woken
        finally:
            waiters = self._waiters.get(finess)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[finess]

    def waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    def wake(self, finesses: Iterable[str]) -> None:
        for finess in finesses:
            for woken in self._waiters.get(finess, ()):
                woken.set()

    def wake_all(self) -> None:
        """After a relay reconnects: notifications may have been missed meanwhile."""
        self.wake(list(self._waiters))

    def _after_commit(self, session: UnitOfWork) -> None:
        """Runs in the thread that committed: hand the pharmacies to the event loop. Also
        called as each savepoint is released (SQLite's group commit), before the real
        commit: those are skipped, a waiter woken then would read nothing yet."""
        noted: set[str] | None = session.info.get(KEY)
        # bound to the engine, or to one of its connections (the database writer's)
        bind = session.bind
        if (not noted or bind is None or bind.engine is not self._engine or self._loop is None
                or session.in_nested_transaction()):
            return
        finesses = tuple(noted)
        noted.clear()
        try:
            self._loop.call_soon_threadsafe(self._committed, finesses)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    def _committed(self, finesses: tuple[str, ...]) -> None:
        self.wake(finesses)
        for relay in self.committed:
            relay(finesses)
