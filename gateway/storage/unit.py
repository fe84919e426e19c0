"""The unit of work every repository receives: an ORM session that knows how it writes.

A unit of work is a function of one `UnitOfWork`, run whole in one transaction by
`Database.read`/`Database.write`. Repositories use it like any SQLModel session:
`add` a new row, query, update. What differs is hidden here, so that the fast path is
the obvious one:

- A write run with `deferred=True` (the claim intake) stages its new rows instead of
  flushing them one by one through the ORM (`gateway.storage.deferred`); `add` does the
  staging, the runner inserts them together. A read about rows that work may have
  staged itself asks `staged(Model)` as well as the database.
- When a read cannot be answered while rows are staged (a duplicate among them), the
  work calls `require_flushed()`: the runner inserts the staged rows and runs the work
  again from the start, unstaged. A deferred work must therefore act only through its
  unit of work, so that running it twice is running it once.
- `serialized` says whether the transaction holds the database's only write lock from
  its first statement (SQLite, BEGIN IMMEDIATE): then what it reads stays true until it
  commits, and no row lock is needed. Where PostgreSQL needs one, `lock` takes an
  advisory lock held until the transaction ends (nothing to do on SQLite), and
  `insert` is the dialect's INSERT, with its ON CONFLICT clauses. Repositories use these;
  services never ask which database they run on.
- A deferred work may say beforehand what it will `remember` first, and the one
  guarded UPDATE it will make (`Ahead`): on PostgreSQL the write group sends those
  statements of all its works, and the locks they need, in one round trip, where each
  work's own cost a round trip that the whole group waited for (`Database`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar, cast

from psycopg import Cursor
from psycopg.rows import RowMaker, namedtuple_row
from sqlalchemy import CursorResult, Delete, Row, Select, Update, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel

from gateway.storage.deferred import (
    DeferredRows,
    FlushFirst,
    driver_first,
    pipeline,
    sqlite_first,
)

T = TypeVar("T")
Query = tuple[str, Mapping[str, Any] | None]  # fixed SQL in the driver's words, its values


@dataclass(frozen=True, slots=True)
class Ahead:
    """A statement a deferred work runs first, known before it runs: on PostgreSQL its
    write group sends it with those of its other works in one round trip, and hands the
    first row over as the answer to `key` (None: no row).

    A read is what the work asks `UnitOfWork.remember` for; the group's next flush
    forgets its answer. A write (`writes`) is the UPDATE ... RETURNING the work makes
    with `changed_returning(key=...)`; its answer stands for the whole transaction. It
    runs before the other works of its run, so it may change only rows that no other
    work of the group can change: a claim under its sender's own lease, and that claim's
    receipt (guarded in SQL by the claim's UPDATE having written)."""

    key: tuple[Any, ...]
    sql: str  # in psycopg's words and parameter style (`%(name)s`)
    params: Mapping[str, Any] | None = None
    lock: int | str | None = None  # taken before the statement, held until the end
    writes: bool = False


Aheads = Callable[[], Sequence[Ahead]]  # what a work gives ahead, built only where it is used


class UnitOfWork(Session):
    """A session whose new rows may be staged; see the module doc."""

    staging: DeferredRows | None = None  # set by `Database` for the works it defers

    @property
    def serialized(self) -> bool:
        """The transaction holds the database's single write lock from its start."""
        return self.bind is not None and self.bind.dialect.name == "sqlite"

    @property
    def defers(self) -> bool:
        """A deferred work is running: new rows are staged, not flushed."""
        return self.staging is not None and self.staging.active

    def add(self, instance: object, _warn: bool = True) -> None:
        """Add a row: staged while a deferred work runs and the row is new."""
        if self.staging is not None and self.staging.active and isinstance(
                instance, SQLModel) and not inspect(instance).persistent:
            self.staging.add(instance)
        else:
            super().add(instance, _warn=_warn)

    def staged(self, kind: type[T]) -> list[T]:
        """Rows of `kind` this transaction staged and has not inserted yet."""
        return self.staging.of_type(kind) if self.staging is not None and self.staging.active \
            else []

    def remember(self, key: tuple[Any, ...], read: Callable[[], T]) -> T:
        """`read()` once while rows are staged (an answer only an insert could change);
        every time otherwise."""
        if self.staging is not None and self.staging.active:
            return self.staging.remember(key, read)
        return read()

    def first(self, statement: Select[Any], params: Mapping[str, Any]) -> Any:
        """The first row of a Core select (None: no row), columns by name. On SQLite it
        runs on the driver's cursor (`deferred.sqlite_first`): a read every claim makes
        on the single writer costs a third of what it costs through SQLAlchemy."""
        if self.serialized:
            return sqlite_first(self.connection(), statement, params)
        return self.connection().execute(statement, params).first()

    def lock(self, key: int | str) -> None:
        """Until the transaction ends, one transaction at a time holds `key` (a string is
        hashed to the lock's number). Serialized transactions already are one at a time.
        A lock taken outside any savepoint is not asked for again (a group of works takes
        a pharmacy's lock once); one taken inside a savepoint is released if it rolls back."""
        self.lock_then_first(key, None)

    def holds(self, key: int | str) -> bool:
        """Whether `key` is this transaction's until it ends: taken by `lock` outside any
        savepoint, or the transaction is serialized."""
        return self.serialized or lock_number(key) in self.info.get("advisory_locks", ())

    def lock_then_first(self, key: int | str, query: str | None,
                        params: Mapping[str, Any] | None = None) -> tuple[Any, ...] | None:
        """`lock(key)`, then the first row of `query` (fixed SQL in the driver's own
        words and parameter style, `params` its values; None: no query): see
        `lock_then_read`."""
        rows = self.lock_then_read([key], [] if query is None else [(query, params)])
        return rows[0] if rows else None

    def lock_then_read(self, keys: Sequence[int | str],
                       queries: Sequence[Query]) -> list[Any]:
        """`lock` each of `keys` in turn, then the first row of each query (None: no row).

        On PostgreSQL the locks not held yet, the queries and psycopg's BEGIN when the
        transaction is new go in one round trip (a pipeline): each statement still runs
        after the one before, and under READ COMMITTED takes its snapshot when it starts,
        so a query sees what a lock's last holder committed. Its rows are the driver's,
        named tuples (instants in UTC, as the models give them): no SQLAlchemy type
        converts their values."""
        held: set[int] = self.info.setdefault("advisory_locks", set())
        numbers = [] if self.serialized else [
            number for number in dict.fromkeys(map(lock_number, keys)) if number not in held]
        if not numbers and (self.serialized or len(queries) < 2):
            connection = self.connection()
            if self.serialized:  # SQLite: the driver's tuples (it returns no instants)
                return [driver_first(connection, query, params) for query, params in queries]
            return [connection.exec_driver_sql(query, params).first()
                    for query, params in queries]
        what = queries[0][0] if queries else "(advisory lock)"
        with pipeline(self.connection(), what) as raw:
            for number in numbers:
                raw.execute("SELECT pg_advisory_xact_lock(%s)", (number,))
            cursors = [raw.cursor(row_factory=_named_utc_row).execute(query, params)
                       for query, params in queries]
        rows = [cursor.fetchone() for cursor in cursors]  # answered on leaving: no wait
        if not self.in_nested_transaction():
            held.update(numbers)
        return rows

    def try_lock(self, key: int | str) -> bool:
        """`lock` if nobody holds `key` now; False, without waiting, if somebody does."""
        if self.serialized:
            return True
        return bool(self.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                                 {"k": lock_number(key)}).scalar_one())

    def insert(self, table: Any) -> postgresql.Insert | sqlite.Insert:
        """The dialect's INSERT into `table` (a model or a Table): it has `on_conflict_*`."""
        return (sqlite.insert if self.serialized else postgresql.insert)(table)

    def changed(self, statement: Update | Delete,
                params: dict[str, Any] | None = None) -> int:
        """Run an UPDATE or DELETE: how many rows it changed. In a deferred work this
        writes at once, unstaged: the runner then fails the whole transaction rather
        than commit it without the rows that work staged."""
        result = self.execute(statement, params)
        count = int(cast(CursorResult[Any], result).rowcount or 0)  # Result is a CursorResult
        if count and self.staging is not None and self.staging.active:
            self.staging.wrote_directly = True
        return count

    def expire_rows(self, kind: type[Any], keys: Iterable[Any]) -> None:
        """Rows of `kind` with these primary keys were just changed by a statement (`changed`)
        the ORM does not see: objects of them this session already holds (loaded by a work
        earlier in the same write group, which shares the session) are expired, so that
        the next work reads them again instead of acting on their old values."""
        for key in keys:
            held = self.identity_map.get(self.identity_key(kind, key))
            if held is not None:
                self.expire(held)

    def changed_returning(self, statement: Update, params: dict[str, Any] | None = None, *,
                          key: tuple[Any, ...] | None = None) -> Row[Any] | None:
        """Run an UPDATE ... RETURNING meant to change at most one row: that row's
        returned values, or None. Direct, like `changed`. `key`: the write's `Ahead.key`;
        if the write group already ran it ahead, its answer, and nothing runs again."""
        written = self.staging.written if self.staging is not None else {}
        row: Row[Any] | None
        if key in written:
            row = written[key]
        elif self.serialized:  # SQLite: on the driver's cursor, as `first`
            row = sqlite_first(self.connection(), statement, params or {})  # a named tuple
        else:
            row = self.execute(statement, params).first()
        if row is not None and self.staging is not None and self.staging.active:
            self.staging.wrote_directly = True
        return row

    def require_flushed(self) -> NoReturn:
        """Stop this work: it needs the rows staged earlier in its transaction to be in
        the database. The runner inserts them and runs the work again, unstaged."""
        raise FlushFirst


def _named_utc_row(cursor: Cursor[Any]) -> RowMaker[Any]:
    """psycopg's named tuples, with instants in UTC (`UTCDateTime` reads them so)."""
    named = namedtuple_row(cursor)

    def make(values: Sequence[Any]) -> Any:
        return named([value.astimezone(UTC) if isinstance(value, datetime) else value
                      for value in values])
    return make


def lock_number(key: int | str) -> int:
    return key if isinstance(key, int) else zlib.crc32(key.encode())
