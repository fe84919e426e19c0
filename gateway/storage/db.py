"""Engines and units of work: SQLite (WAL, synchronous=FULL, BEGIN IMMEDIATE) or PostgreSQL.

Each unit of work is a plain function over a synchronous `UnitOfWork` (an ORM
session, `gateway.storage.unit`), run whole in a worker thread: one thread hop per
transaction instead of one per statement keeps the event loop free and the claim path
fast.

SQLite's driver opens transactions lazily and in DEFERRED mode; a transaction that
reads then writes would then fail at once with SQLITE_BUSY, ignoring the busy
timeout. So the driver's own transaction handling is switched off and every
transaction is begun here: IMMEDIATE for writers, DEFERRED for readers.

The writes of one process are grouped (`Database.write`): units of work waiting
while a commit is under way run together in the next transaction, each in its
own savepoint (one failing does not undo the others), and share one durable
commit. A caller still gets its answer only once its work is committed. On
PostgreSQL this is what makes the claim path cheap too: one BEGIN/COMMIT (and one
WAL flush) per group instead of per work, and the locks every intake takes (the
audit chain's, a pharmacy's receipts') taken once per group instead of once per
claim, each held across a commit. Groups of every process take one advisory lock
first (`GROUP_LOCK`), so they run one at a time, as on SQLite, and never deadlock
on each other. `write_now` runs one work alone, in the calling thread (commands, tools).
The writer thread keeps its connection between groups that follow each other closely
(`HeldConnection`).

On PostgreSQL, the statements that deferred works give beforehand (`ahead`, see
`gateway.storage.unit.Ahead`: reads, and a sender's guarded UPDATE) go with the group's
lock, or before the next run of deferred works, in one round trip for all of them; and
when staged rows are the group's last statements, COMMIT goes in their round trip.

A work run with `deferred=True` stages its new rows (`gateway.storage.deferred`: its
unit of work's `add` does it) instead of flushing them through the ORM: such works need
no savepoint (they write nothing until the buffer is flushed), and their rows go in
together, before the next ordinary work and before commit. If that insert fails, every
work whose rows it held fails with it, and nothing else does; unless one of them also
changed rows directly (`UnitOfWork.changed`), which no savepoint can undo alone: then the
whole group fails. On PostgreSQL a failed statement outside a savepoint aborts the
transaction: the whole group fails then too, never commits half.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio.to_thread
from psycopg import pq
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from gateway.observability.metrics import WRITE_GROUP_SECONDS, WRITE_GROUP_WORKS
from gateway.storage.checkpoints import BACKSTOP_PAGES, WalCheckpointer
from gateway.storage.deferred import DeferredRows, FlushFirst, driver_execute
from gateway.storage.health import DatabaseHealth, DatabaseUnavailable, unavailable_reason
from gateway.storage.unit import Ahead, Aheads, UnitOfWork, lock_number
from gateway.storage.writer import WriterThread

T = TypeVar("T")
Work = Callable[[UnitOfWork], Any]
Queued = tuple[Work, bool, Aheads | None]  # a work, deferred or not, what it gives ahead
MAX_GROUP = 64  # units of work sharing one SQLite commit
SQLITE_BUSY_TIMEOUT_S = 30
PING_AFTER_IDLE_S = 0.2  # PostgreSQL: a pooled connection idle this long is pinged before use
IDLE_SINCE = "idle_since"  # a pool entry's info: when it was last checked in
HELD_IDLE_SINCE = "held_idle_since"  # ... or, given back by the writer, when it last wrote


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sync_url(url: str) -> str:
    """pysqlite for SQLite, psycopg (3) for PostgreSQL, whatever driver the URL named."""
    parsed = make_url(url)
    driver = "sqlite" if parsed.get_backend_name() == "sqlite" else "postgresql+psycopg"
    return parsed.set(drivername=driver).render_as_string(hide_password=False)


def ensure_sqlite_dir(url: str) -> None:
    """The SQLite file's directory, and the file itself created owner-only (0600) before
    SQLite makes it world-readable by the umask: it holds health data, and SQLite gives
    its -wal and -shm files the main file's mode."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass


def configure_sqlite(engine: Engine) -> None:
    """Durable WAL settings on every connection, and explicit BEGINs (see module doc)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        # WAL is persistent in the file; switching needs a lock, so only when not yet set.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        # checkpoints are a thread's (gateway.storage.checkpoints); this is the backstop
        cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Savepoints (each unit of a group commit has one) and the receipts' triggers
        # make SQLite keep a sub-journal of the pages they change: in memory, not as a
        # temporary file written for every queued claim (bytes written per queued claim
        # measured: 78 -> 38 KB with a receipt, 45 -> 27 KB without).
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        driver_execute(connection, f"BEGIN {mode}")


def create_engine(url: str) -> Engine:
    ensure_sqlite_dir(url)
    if is_sqlite(url):
        engine = sa_create_engine(
            sync_url(url),
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
            # one per anyio worker thread (40), where reads run (writes run on the
            # writer thread): a read never opens, and a SQLite connection's first query
            # never re-reads, the schema under load
            pool_size=40, max_overflow=8,
        )
        configure_sqlite(engine)
        return engine
    engine = sa_create_engine(sync_url(url), pool_size=10, max_overflow=10,
                              pool_use_lifo=True)  # the busy connections stay the busy ones
    ping_when_idle(engine)
    return engine


def ping_when_idle(engine: Engine) -> None:
    """A pooled connection idle for PING_AFTER_IDLE_S is pinged before use, and replaced
    if the database went away meanwhile (a restart): the first requests after a restart
    do not fail. One busy enough to be back sooner is not: pinging it cost every write
    group a round trip (SQLAlchemy's `pool_pre_ping` pings at every checkout), and no
    restart is that quick. A statement that meets a dead connection fails, and the
    connection is replaced (SQLAlchemy also replaces the pool's others)."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # one the writer held idle (`HeldConnection`) has been idle since it says
        record.info[IDLE_SINCE] = record.info.pop(HELD_IDLE_SINCE, None) or time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.get(IDLE_SINCE)  # none for a new connection
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001 - any failure: this connection is no good
            raise DisconnectionError("the database went away") from exc  # the pool reconnects


class Database:
    """The engine and its units of work; built once in the lifespan."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self._writers = sessionmaker(self.engine, class_=UnitOfWork, expire_on_commit=False)
        self._reader_engine = self.engine.execution_options(sqlite_begin="DEFERRED")
        self._readers = sessionmaker(self._reader_engine, class_=UnitOfWork, expire_on_commit=False)
        self._sqlite = is_sqlite(url)
        self._waiting: list[tuple[Queued, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._writer = WriterThread("database-writer")
        self._held = HeldConnection(self.engine)  # the writer thread's, between its groups
        database = make_url(url).database if self._sqlite else None
        self._checkpoints = (WalCheckpointer(database)
                             if database not in (None, "", ":memory:") else None)
        self.health = DatabaseHealth()

    def unavailable(self, error: BaseException) -> BaseException:
        """`error` as the caller should see it: DatabaseUnavailable (noted in `health`)
        when it means the database cannot be used now, else unchanged."""
        reason = unavailable_reason(error)
        if reason is None:
            return error
        self.health.failed(reason)
        if isinstance(error, DatabaseUnavailable):
            return error
        translated = DatabaseUnavailable(reason)
        translated.__cause__ = error
        return translated

    @contextmanager
    def _guarded(self, *, writes: bool) -> Iterator[None]:
        try:
            yield
        except Exception as error:
            translated = self.unavailable(error)
            if translated is error:
                raise
            raise translated from error
        if writes:
            self.health.wrote()

    def write_now(self, work: Callable[[UnitOfWork], T], *, deferred: bool = False) -> T:
        """Run `work` in one committed transaction, in this thread."""
        with self._guarded(writes=True), self._writers() as session, session.begin():
            if not deferred:
                return work(session)
            buffer = session.staging = DeferredRows()
            try:
                result = _run_deferred(buffer, work, session)
            except FlushFirst:
                buffer.rollback_to(0)
                buffer.flush(session)
                return work(session)
            buffer.flush(session)
            return result

    def read_now(self, work: Callable[[UnitOfWork], T]) -> T:
        with self._guarded(writes=False), self._readers() as session, session.begin():
            return work(session)

    async def write(self, work: Callable[[UnitOfWork], T], *, deferred: bool = False,
                    ahead: Aheads | None = None) -> T:
        """Run `work` in a committed transaction, off the event loop; `deferred`: its new
        rows are staged, and `ahead()` gives the statements it will run first (see the
        module doc; called on PostgreSQL only, in the writer thread)."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append(((work, deferred, ahead), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
            try:
                outcomes, wrote = await self._writer.run(
                    self._timed_group, [queued for queued, _ in batch])
            except BaseException as exc:  # the commit itself failed: every work with it
                outcomes = [(False, exc)] * len(batch)
            else:
                if wrote:  # a commit that changed nothing proves nothing about the disk
                    self.health.wrote()
                    if self._checkpoints is not None:
                        self._checkpoints.wrote()
            for (_, done), (ok, value) in zip(batch, outcomes, strict=True):
                if done.done():
                    continue
                if ok:
                    done.set_result(value)
                else:
                    done.set_exception(self.unavailable(value))

    def _timed_group(self, works: list[Queued]) -> tuple[list[tuple[bool, Any]], bool]:
        """`_write_group`, timed in the writer's thread: how busy the writer is and how many
        works share a commit are what show a gateway whose claims queue behind its writes."""
        started = time.perf_counter()
        try:
            return self._write_group(works)
        finally:
            WRITE_GROUP_SECONDS.observe(time.perf_counter() - started)
            WRITE_GROUP_WORKS.observe(len(works))

    def _write_group(self, works: list[Queued]) -> tuple[list[tuple[bool, Any]], bool]:
        """Run `works` in one SQLite transaction; their outcomes, and whether it changed rows.

        A failure SQLite answers by rolling the whole transaction back (a full disk, an
        I/O error) undoes the works before it too: the group then fails whole, rather
        than report them stored."""
        outcomes: list[tuple[bool, Any]] = []
        held: list[int] = []  # outcomes of deferred works whose rows wait in the buffer
        with self._held.use() as connection, self._writers(bind=connection) as session, \
                session.begin():
            raw = _Transaction(session, sqlite=self._sqlite)
            changes_before = raw.total_changes
            buffer = session.staging = DeferredRows()
            wrote_ahead: set[int] = set()  # works whose write ran ahead: written directly
            read_until = 0 if self._sqlite else _read_ahead(session, buffer, works, 0,
                                                            wrote_ahead)
            for index, (work, deferred, _) in enumerate(works):
                if deferred:
                    if index >= read_until and not self._sqlite:
                        read_until = _read_ahead(session, buffer, works, index, wrote_ahead)
                    mark, wrote = buffer.mark(), buffer.wrote_directly
                    buffer.wrote_directly = index in wrote_ahead
                    try:
                        outcomes.append((True, _run_deferred(buffer, work, session)))
                        held.append(len(outcomes) - 1)
                        buffer.wrote_directly |= wrote
                        continue
                    except Exception as exc:
                        if buffer.wrote_directly:  # its direct writes cannot be undone alone
                            raise
                        buffer.wrote_directly = wrote
                        buffer.rollback_to(mark)
                        if not isinstance(exc, FlushFirst):  # else run again below, ordinary
                            outcomes.append((False, exc))
                            _still_in_transaction(raw, exc)
                            continue
                _flush_or_fail(raw, session, buffer, held, outcomes)
                held = []
                read_until = index + 1  # the flush forgot what was read ahead
                try:
                    with session.begin_nested():
                        result = work(session)
                    # after the savepoint is released: its flush may still fail, and then
                    # this work has one outcome, the failure
                    outcomes.append((True, result))
                except Exception as exc:  # noqa: BLE001 - handed to that work's caller
                    outcomes.append((False, exc))
                    _still_in_transaction(raw, exc)
            # the last statements: on PostgreSQL, COMMIT rides the inserts' round trip
            _flush_or_fail(raw, session, buffer, held, outcomes, last=True)
            changed = raw.total_changes != changes_before or not self._sqlite
        return outcomes, changed

    def read_connection_now(self, work: Callable[[Connection], T]) -> T:
        """A read on a bare connection, without an ORM session: for the per-request ones."""
        with (self._guarded(writes=False), self._reader_engine.connect() as connection,
              connection.begin()):
            return work(connection)

    async def read_connection(self, work: Callable[[Connection], T]) -> T:
        return await anyio.to_thread.run_sync(partial(self.read_connection_now, work))

    async def read(self, work: Callable[[UnitOfWork], T]) -> T:
        return await anyio.to_thread.run_sync(partial(self.read_now, work))

    async def ping(self) -> None:
        await self.read(lambda session: session.execute(text("SELECT 1")).scalar_one())

    async def dispose(self) -> None:
        await anyio.to_thread.run_sync(self._writer.stop)
        self._held.release()
        if self._checkpoints is not None:
            await anyio.to_thread.run_sync(self._checkpoints.stop)
        await anyio.to_thread.run_sync(self.engine.dispose)


GROUP_LOCK = "storage.write-group"


class HeldConnection:
    """The writer thread's pooled connection, kept checked out from one write group to the
    next while they follow each other within PING_AFTER_IDLE_S: checking a connection out
    of the pool and back in, and building and closing its `Connection`, took ~10 % of the
    writer thread's time for a claim queued alone (py-spy; 4 % of the claim's instructions,
    `bench/instructions.py --concurrency 1`). After a longer pause it is given back
    and the next group checks one out anew, so that the pool pings it first, as before
    (`ping_when_idle`: a database restarted meanwhile is not met by a write). A group that
    fails gives it back too (and the pool replaces it if the failure broke it), and so does
    a disposed pool (`Engine.dispose`): the pool's next connection is the one to use."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._pool = engine.pool  # the pool it came from
        self._since = 0.0  # when the last group ended

    @contextmanager
    def use(self) -> Iterator[Connection]:
        connection = self._connection
        if connection is not None and (time.monotonic() - self._since >= PING_AFTER_IDLE_S
                                       or self._engine.pool is not self._pool
                                       or connection.invalidated or connection.closed):
            if not connection.invalidated and not connection.closed:
                connection.info[HELD_IDLE_SINCE] = self._since  # the pool pings it
            self.release()
            connection = None
        if connection is None:
            self._pool = self._engine.pool
            connection = self._connection = self._engine.connect()
        try:
            yield connection
        except BaseException:
            self.release()
            raise
        self._since = time.monotonic()

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class _Transaction:
    """What the group runner asks of the driver's connection, on either database."""

    def __init__(self, session: UnitOfWork, *, sqlite: bool) -> None:
        self._raw: Any = session.connection().connection.dbapi_connection
        self._sqlite = sqlite

    @property
    def total_changes(self) -> int:
        """Rows changed so far on SQLite; on PostgreSQL, -1 (unknown: any commit counts)."""
        return int(self._raw.total_changes) if self._sqlite else -1

    @property
    def in_transaction(self) -> bool:
        """False once the database rolled the whole transaction back (SQLite, on a full
        disk or an I/O error) or the connection broke (PostgreSQL)."""
        if self._sqlite:
            return bool(cast(sqlite3.Connection, self._raw).in_transaction)
        return bool(self._raw.info.transaction_status == pq.TransactionStatus.INTRANS)


def _read_ahead(session: UnitOfWork, buffer: DeferredRows, works: list[Queued],
                start: int, wrote_ahead: set[int]) -> int:
    """PostgreSQL: the group's lock, then the statements the run of deferred works from
    `start` gives ahead, with the locks they need, in one round trip; each row handed to
    the buffer as the answer its work will ask for. Where the run ends; the works whose
    write ran are added to `wrote_ahead`.

    The group's lock first, taken by every group of every process before anything else:
    groups run one at a time across processes as they do in one, so two groups can never
    wait on each other's locks (a work takes its per-pharmacy and audit-chain locks in
    any order; one group holding both while another holds one of them would deadlock).
    Reading ahead is reading a moment earlier in the same transaction, as the work would
    have if it had come first in its group. Only the group's own writes could change
    an answer meanwhile, and those wait in the buffer, whose flush forgets every answer:
    a work whose answer was forgotten reads for itself. A write ahead is the work's own
    guarded UPDATE, which no other work of the group can affect: it runs a moment early,
    and its answer is kept. Its work has then written directly, whether or not it gets
    as far as its write: if it fails, the group fails whole, as it would had the work
    failed after writing."""
    reads: dict[tuple[Any, ...], Ahead] = {}
    end = start
    while end < len(works) and works[end][1]:
        ahead = works[end][2]
        for read in ahead() if ahead is not None else ():
            if read.writes:
                wrote_ahead.add(end)
            if not (read.writes and read.key in buffer.written):  # a write runs once
                reads.setdefault(read.key, read)
        end += 1
    locks = sorted({read.lock for read in reads.values() if read.lock is not None},
                   key=lock_number)
    rows = session.lock_then_read([GROUP_LOCK, *locks],
                                  [(read.sql, read.params) for read in reads.values()])
    for read, row in zip(reads.values(), rows, strict=True):
        if read.writes:
            buffer.written[read.key] = row
        else:
            buffer.hand_over(read.key, row)
    return end


def _run_deferred(buffer: DeferredRows, work: Callable[[UnitOfWork], T],
                  session: UnitOfWork) -> T:
    buffer.active = True
    try:
        return work(session)
    finally:
        buffer.active = False


def _still_in_transaction(raw: Any, error: BaseException | None) -> None:
    """After `error`, raise it if SQLite rolled the whole transaction back with it."""
    if error is not None and not raw.in_transaction:
        raise error


def _flush_or_fail(raw: Any, session: UnitOfWork, buffer: DeferredRows, held: list[int],
                   outcomes: list[tuple[bool, Any]], *, last: bool = False) -> None:
    """Insert the staged rows; if that fails, so do the works they came from, or the whole
    transaction when one of them also changed rows directly (no savepoint undoes that).
    `last`: these are the transaction's last statements (see `DeferredRows.flush`)."""
    direct = buffer.wrote_directly
    error = _flush_staged(session, buffer, held, outcomes, last=last)
    if error is not None and direct:
        raise error
    _still_in_transaction(raw, error)


def _flush_staged(session: UnitOfWork, buffer: DeferredRows, held: list[int],
                  outcomes: list[tuple[bool, Any]], *, last: bool = False) -> Exception | None:
    """Insert the staged rows in a savepoint; if that fails, so do the works they came
    from (the failure is returned)."""
    if not buffer.rows:
        buffer.flush(session)  # nothing to insert; forgets remembered reads
        return None
    try:
        buffer.flush(session, savepoint=True, last=last)
    except Exception as exc:  # noqa: BLE001 - handed to those works' callers
        for index in held:
            outcomes[index] = (False, exc)
        return exc
    return None
