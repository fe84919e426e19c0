"""New rows held back and inserted together: the claim intake's way past the ORM's flush.

Storing a queued claim adds six rows (claim, history step, events, receipt, audit
entry). Flushed one claim at a time through the ORM, that cost ~1.5 ms of Python
and a dozen statements per claim, all on SQLite's single writer. A unit of work
run with `deferred=True` stages its new rows here instead; they are inserted with
one `executemany` per table before the next ordinary work of the transaction runs,
and always before commit, so the outcome is the same as `session.add`.

Repositories never see this buffer: they `add` rows to their unit of work and ask it
for what it `staged` (`gateway.storage.unit`). The few reads about rows a work may have
staged itself (duplicate check, exposure sums, the audit chain's head) ask both. Reads
whose answer cannot change while rows are staged are kept for the life of the buffer
(`remember`).

Here too are the few statements a write group sends past SQLAlchemy's execution, on the
driver's own connection or cursor: BEGIN, SAVEPOINT, RELEASE and COMMIT
(`driver_execute`), PostgreSQL's pipeline (`pipeline`), SQLite's staged inserts and its
one-row reads and guarded updates (`sqlite_first`, `driver_first`), their errors raised
as SQLAlchemy's.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache, lru_cache
from typing import Any, TypeVar, cast

import psycopg
from sqlalchemy import Connection, Dialect, Insert, Select, Table, Update
from sqlalchemy.exc import DBAPIError, StatementError
from sqlmodel import Session, SQLModel

from gateway.storage.models import table_of

T = TypeVar("T")
STAGED_SAVEPOINT = "staged_rows"  # PostgreSQL: around a group's staged inserts


class FlushFirst(Exception):  # noqa: N818 - a signal to the runner, not an error
    """The work needs rows staged earlier in its transaction to be in the database
    (raised by `UnitOfWork.require_flushed`, caught by `Database`'s runner)."""


class DeferredRows:
    """Rows staged by deferred works of one transaction, in the order they were added."""

    def __init__(self) -> None:
        self.rows: list[SQLModel] = []
        self._staged: set[int] = set()  # ids of `rows`: staging twice is adding once
        self._by_type: dict[type, list[SQLModel]] = {}  # the same rows, by model
        self.active = False  # True while a deferred work runs
        # A deferred work changed rows directly (`UnitOfWork.changed`) since the staged
        # rows were last inserted: no savepoint can undo that alone, so if those rows
        # fail to go in, the whole transaction must fail (see `Database`).
        self.wrote_directly = False
        self._remembered: dict[tuple[Any, ...], Any] = {}
        # answers of the writes the group ran ahead (`Ahead.writes`): never forgotten
        self.written: dict[tuple[Any, ...], Any] = {}

    def mark(self) -> int:
        return len(self.rows)

    def rollback_to(self, mark: int) -> None:
        """Forget what a failed work staged (its savepoint, without a statement)."""
        for row in reversed(self.rows[mark:]):  # each is the last of its type's list
            self._by_type[type(row)].pop()
            self._staged.discard(id(row))
        del self.rows[mark:]

    def add(self, row: SQLModel) -> None:
        if id(row) not in self._staged:
            self._staged.add(id(row))
            self.rows.append(row)
            self._by_type.setdefault(type(row), []).append(row)

    def remember(self, key: tuple[Any, ...], read: Callable[[], T]) -> T:
        """`read()` once per buffer life: for answers only a flushed work could change."""
        if key not in self._remembered:
            self._remembered[key] = read()
        return cast(T, self._remembered[key])  # what `read` returned for this key

    def hand_over(self, key: tuple[Any, ...], answer: Any) -> None:
        """`answer`, read ahead, is what `remember(key, ...)` returns until the next flush."""
        self._remembered.setdefault(key, answer)

    def of_type(self, kind: type[T]) -> list[T]:
        return cast(list[T], self._by_type.get(kind, []))  # filed by type in `add`

    def flush(self, session: Session, *, savepoint: bool = False, last: bool = False) -> None:
        """Insert every staged row, parents before children, one executemany per run of
        rows with the same columns; then forget them and every remembered read.
        `savepoint`: inside a savepoint of its own, so that a failed insert undoes only
        these rows (and the transaction goes on). `last` (with `savepoint`): these are the
        transaction's last statements; on PostgreSQL COMMIT then goes in the inserts'
        pipeline, one round trip for both (a failed insert skips it, and the transaction
        goes on)."""
        if session.dirty or session.new or session.deleted:  # the session's own changes
            session.flush()  # first, as its `execute` would have done
        staged, self.rows, self._staged, self._by_type = self.rows, [], set(), {}
        self._remembered.clear()
        self.wrote_directly = False
        by_table: dict[str, list[dict[str, Any]]] = {}
        for row in staged:
            table = table_of(type(row))
            columns, keys = _columns_of(table)
            state = row.__dict__  # what the ORM itself reads at insert; no attribute events
            values = {column: state.get(column) for column in columns}
            for key in keys:  # autoincrement ids: the database's
                if values[key] is None:
                    del values[key]
            by_table.setdefault(table.name, []).append(values)
        if not savepoint:
            with _pipelined(session):
                _insert(session, by_table)
        else:
            _insert_in_savepoint(session, by_table, last=last)


def _insert(session: Session, by_table: dict[str, list[dict[str, Any]]]) -> None:
    """One executemany per table, on the connection: through the session's `execute` they
    cost ~0.4 M instructions more per write group (counted by bench/instructions.py). On
    SQLite, on the driver's cursor (`_insert_on_sqlite`)."""
    connection = session.connection()
    on_sqlite = connection.dialect.name == "sqlite"
    for table in _sorted_tables():  # foreign keys: parents first
        for rows in _same_columns(by_table.pop(table.name, [])):
            if on_sqlite:
                _insert_on_sqlite(connection, table, rows)
            else:
                connection.execute(_insert_into(table), rows)
    if by_table:  # pragma: no cover - a model outside the metadata
        raise LookupError(f"no table to flush {sorted(by_table)} into")


def _insert_in_savepoint(session: Session, by_table: dict[str, list[dict[str, Any]]], *,
                         last: bool = False) -> None:
    """The savepoint, the inserts and its release, the savepoint's statements written out:
    SQLAlchemy's `begin_nested` compiles both anew at every call (they have no cache key),
    and on PostgreSQL would wait for each. There, all go in one pipeline, so one round
    trip: the pipeline answers a failed insert on leaving, every statement after it
    skipped, the savepoint still there; it is rolled back to, and the transaction goes
    on, as it does on SQLite.

    `last` on PostgreSQL: COMMIT follows the release in that pipeline. The session's
    own commit then finds the transaction ended and sends nothing (psycopg commits only
    a transaction under way). A failed insert skips the COMMIT as it skips the release;
    a COMMIT that fails itself (a deferred check) has undone everything: no savepoint is
    left to return to, and the error is the group's."""
    connection = session.connection()
    commit = last and session.get_bind().dialect.name == "postgresql"
    try:
        with _pipelined(session):
            driver_execute(connection, f"SAVEPOINT {STAGED_SAVEPOINT}")
            _insert(session, by_table)
            driver_execute(connection, f"RELEASE SAVEPOINT {STAGED_SAVEPOINT}")
            if commit:
                driver_execute(connection, "COMMIT")
    except DBAPIError as failed:
        if commit and not _under_way(connection):  # the COMMIT failed: nothing was stored
            raise
        try:
            connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {STAGED_SAVEPOINT}")
            connection.exec_driver_sql(f"RELEASE SAVEPOINT {STAGED_SAVEPOINT}")
        except DBAPIError:  # SQLite rolled the whole transaction back (a full disk, an
            raise failed from None  # I/O error): the runner fails the group on this error
        raise


def _under_way(connection: Connection) -> bool:
    """PostgreSQL: whether the driver's connection is still inside a transaction."""
    raw = cast("psycopg.Connection[Any]", connection.connection.dbapi_connection)
    return raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE


@contextmanager
def _pipelined(session: Session) -> Iterator[None]:
    """On PostgreSQL, the inserts sent together and answered together: one round trip for
    the group's rows instead of one per table, which a write group's every claim waited
    for. A failed insert raises on leaving, inside the caller's savepoint."""
    if session.get_bind().dialect.name != "postgresql":
        yield
        return
    with pipeline(session.connection(), "(pipelined inserts)"):
        yield


def driver_execute(connection: Connection, statement: str) -> None:
    """A statement without parameters or rows (BEGIN, SAVEPOINT, RELEASE, COMMIT) sent on
    the driver's connection: through `exec_driver_sql` each cost ~17 µs more of Python (an
    execution context, a result, the events), and every write group sends three or four.
    Its error is raised as SQLAlchemy raises one (`DBAPIError`, the statement named); in
    a PostgreSQL pipeline it is raised on leaving, by `pipeline`."""
    raw: Any = connection.connection.dbapi_connection  # sqlite3's or psycopg's
    try:
        raw.execute(statement)
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _as_sqlalchemy_error(connection, exc, statement) from exc


def driver_first(connection: Connection, statement: str,
                 params: Mapping[str, Any] | list[Any] | None = None) -> Any:
    """The first row (the driver's tuple; None: no row) of fixed SQL in the driver's own
    words, sent on its connection, past `exec_driver_sql`'s execution context: SQLite's
    audit chain head, read by the first claim of every write group."""
    raw: Any = connection.connection.dbapi_connection
    try:
        cursor = raw.execute(statement, params or ())
        try:
            return cursor.fetchone()
        finally:
            cursor.close()
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _as_sqlalchemy_error(connection, exc, statement, params) from exc


def _as_sqlalchemy_error(connection: Connection, error: Exception, statement: str,
                         params: Any = None) -> StatementError:
    """The driver's `error` as SQLAlchemy raises it (`DBAPIError`: IntegrityError for a
    duplicate...), `statement` named; a connection it broke (psycopg's) is invalidated,
    as SQLAlchemy does for the statements it runs itself. (A plain function: a context
    manager around each statement cost a claim sent alone 2 % more instructions.)"""
    raw = connection.connection.dbapi_connection
    if getattr(raw, "broken", False) or getattr(raw, "closed", False):  # sqlite3's has neither
        connection.invalidate(error)
    return DBAPIError.instance(statement, params, error, connection.dialect.loaded_dbapi.Error)


@contextmanager
def pipeline(connection: Connection, what: str) -> Iterator[psycopg.Connection[Any]]:
    """PostgreSQL: statements sent on the driver's connection in psycopg's pipeline mode,
    answered together on leaving (or at the first fetch). Its errors are raised as
    SQLAlchemy raises them (`DBAPIError`, `what` as the statement), and a connection they
    broke is invalidated, as SQLAlchemy does for the statements it runs itself. Raw, not
    through SQLAlchemy: a SELECT run through it in a pipeline has no description yet and
    would be taken for a statement without rows."""
    raw = cast("psycopg.Connection[Any]", connection.connection.dbapi_connection)
    try:
        with raw.pipeline():
            yield raw
    except psycopg.Error as exc:
        raise _as_sqlalchemy_error(connection, exc, what) from exc


@cache
def _sorted_tables() -> list[Table]:
    """The tables, parents first (SQLAlchemy sorts them again at every call)."""
    return SQLModel.metadata.sorted_tables


@cache
def _insert_into(table: Table) -> Insert:
    """The table's INSERT, built once. Inline: nothing generated is read back (no
    RETURNING), which the pipeline would only answer on leaving."""
    return table.insert().inline()


def _insert_on_sqlite(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """SQLite: the rows' executemany on the driver's cursor, each value converted by its
    column type's own bind processor (the stored form is SQLAlchemy's), the error raised
    as SQLAlchemy's. Through `Connection.execute` the same rows cost a claim queued alone
    ~0.6 M instructions more (4.72 against 4.10 M, `bench/instructions.py --concurrency
    1`; 16 at a time 3.13 against 3.01), on SQLite's one writer. PostgreSQL keeps
    SQLAlchemy's executemany, in the group's pipeline."""
    sql, order, processors = _sqlite_insert(table, tuple(rows[0]), connection.dialect)
    params = [tuple(values[key] if process is None else process(values[key])
                    for key, process in zip(order, processors, strict=True))
              for values in rows]
    raw: Any = connection.connection.dbapi_connection
    try:
        raw.executemany(sql, params)
    except connection.dialect.loaded_dbapi.Error as exc:
        raise _as_sqlalchemy_error(connection, exc, sql, params) from exc


@lru_cache(maxsize=256)  # per table, run of columns and engine
def _sqlite_insert(table: Table, keys: tuple[str, ...], dialect: Dialect) -> tuple[
        str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]]:
    """The table's INSERT of `keys`' columns as SQLAlchemy compiles it for SQLite, the
    keys in the order of its `?`, and each one's bind processor: the dialect's own type's
    (SQLite's DATETIME, DATE...), since the generic type has none."""
    compiled = _insert_into(table).compile(dialect=dialect, column_keys=list(keys))
    order = tuple(compiled.positiontup or ())
    return str(compiled), order, tuple(
        table.columns[key].type.dialect_impl(dialect).bind_processor(dialect) for key in order)


def sqlite_first(connection: Connection, statement: Select[Any] | Update,
                 params: Mapping[str, Any]) -> Any:
    """SQLite: the first row of a Core SELECT, or of an UPDATE ... RETURNING (None: no
    row), run on the driver's cursor, its values converted by the types' own bind and
    result processors: what SQLAlchemy would return, as a named tuple. Such statements
    run once or twice per claim on the single writer (the intake's read, a sent claim's
    guarded UPDATE), and through SQLAlchemy's execution their cache key, parameters and
    result cost several times the statement itself."""
    sql, binds, processors, row_type = _sqlite_compiled(statement, connection.dialect)
    values = [fixed if name is None else params[name] if process is None
              else process(params[name]) for name, fixed, process in binds]
    row = driver_first(connection, sql, values)  # an UPDATE's changes: all at this fetch
    if row is None:
        return None
    return row_type._make([value if process is None else process(value)
                           for value, process in zip(row, processors, strict=True)])


@lru_cache(maxsize=64)  # per statement and engine: the few built once, at import
def _sqlite_compiled(statement: Select[Any] | Update, dialect: Dialect) -> tuple[
        str, tuple[tuple[str | None, Any, Callable[[Any], Any] | None], ...],
        tuple[Callable[[Any], Any] | None, ...], Any]:
    """The statement as SQLAlchemy compiles it for SQLite; for each `?` in order, the
    name of the caller's parameter and its bind processor, or (None, the value the
    statement fixes, converted); each returned column's result processor; and the named
    tuple its rows become."""
    compiled = statement.compile(dialect=dialect)
    binds: list[tuple[str | None, Any, Callable[[Any], Any] | None]] = []
    for name in compiled.positiontup or ():
        bind = compiled.binds[name]
        if bind.callable is not None:
            raise ValueError(f"{name}: a parameter computed at execution is not supported")
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if bind.required:
            binds.append((name, None, process))
        else:
            binds.append((None, bind.value if process is None else process(bind.value), None))
    columns = compiled._result_columns  # (key, name, objects, type) per column
    if not columns:
        raise ValueError("a statement that returns no rows: use the connection")
    return str(compiled), tuple(binds), tuple(
        column[3].dialect_impl(dialect).result_processor(dialect, None) for column in columns
    ), namedtuple("Row", [str(column[0]) for column in columns], rename=True)  # noqa: PYI024


@cache
def _columns_of(table: Table) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A table's column keys, and those of its primary key."""
    return (tuple(column.key for column in table.columns),
            tuple(column.key for column in table.primary_key.columns))


def _same_columns(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    run: list[dict[str, Any]] = []
    for values in rows:
        if run and values.keys() != run[0].keys():
            yield run
            run = []
        run.append(values)
    if run:
        yield run
