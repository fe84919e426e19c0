"""SQLite's WAL checkpoints, run by a thread of their own instead of by a write group.

Why: SQLite copies its write-ahead log back into the database file (a checkpoint) in
the commit that takes the log past `wal_autocheckpoint` pages, and syncs the file
(synchronous=FULL). Under load that was one commit in ten, each 3 to 8 ms instead of
~1: the write group holding it, and every claim waiting for the next group, paid it,
and so did the fail-fast latency's p99. Here a thread with its own connection runs a
PASSIVE checkpoint (it waits for no reader and no writer) shortly after writes; SQLite
releases the GIL while it copies, so the event loop and the writer go on. The writers'
own automatic checkpoint stays, at BACKSTOP_PAGES, should this thread fall behind.
"""

from __future__ import annotations

import sqlite3
import threading

import structlog

log = structlog.get_logger(__name__)

INTERVAL_S = 0.1  # after a write, at most this long before the log is copied back
_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
BACKSTOP_PAGES = 10_000  # ~40 MB of log: the writers checkpoint themselves past this


class WalCheckpointer:
    """Checkpoints the SQLite file at `path` at most every INTERVAL_S while writes go on:
    `wrote` after each commit; `stop` before the engine is disposed."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._wrote = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wrote(self) -> None:
        if self._thread is None:
            self._start()
        self._wrote.set()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        self._wrote.set()
        if thread is not None:
            thread.join()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(target=self._run, name="wal-checkpointer",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        try:  # never waits for a lock: busy now, it tries again after the next write
            connection = sqlite3.connect(self._path, timeout=0, isolation_level=None,
                                         check_same_thread=False)
            connection.execute("PRAGMA synchronous=FULL")  # the file synced after each copy
        except sqlite3.Error as exc:  # the writers' backstop checkpoints remain
            log.warning("storage.checkpointer_unavailable", error=type(exc).__name__)
            return
        try:
            # `stopping` is looked at before each wait for a write: a `stop` that comes
            # between a wake-up and the `clear` has its `wrote.set()` cleared, and a wait
            # for the next write would then never end (a process that never stopped)
            while not self._stopping.is_set():
                self._wrote.wait()
                if self._stopping.wait(INTERVAL_S):
                    break
                self._wrote.clear()  # the interval let writes gather: one copy for many
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # the log keeps every page meanwhile
                    if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _BUSY:  # extended
                        log.warning("storage.checkpoint_failed", error=type(exc).__name__)
        finally:
            connection.close()
