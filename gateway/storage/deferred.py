"""New rows held back and inserted together: the claim intake's way past the ORM's flush.

Storing a queued claim adds six rows (claim, history step, events, receipt, audit
entry). Flushed one claim at a time through the ORM, that cost ~1.5 ms of Python
and a dozen statements per claim, all on SQLite's single writer. A unit of work
run with `deferred=True` stages its new rows here instead; they are inserted with
one `executemany` per table before the next ordinary work of the transaction runs,
and always before commit, so the outcome is the same as `session.add`.

The few reads such a work makes about rows it may have staged itself (duplicate
check, exposure sums, the audit chain's head) look here first: `pending_claims`,
`pending_receipts`, `last_audit_entry`. Reads whose answer cannot change while
rows are staged are kept for the life of the buffer (`remember`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Table, inspect
from sqlmodel import Session, SQLModel

from gateway.storage.models import AuditEntry, Claim, Receipt

T = TypeVar("T")
KEY = "deferred_rows"


class FlushFirst(Exception):  # noqa: N818 - a signal to the runner, not an error
    """The work needs rows staged earlier in its transaction to be in the database."""


class DeferredRows:
    """Rows staged by deferred works of one transaction, in the order they were added."""

    def __init__(self) -> None:
        self.rows: list[SQLModel] = []
        self._staged: set[int] = set()  # ids of `rows`: staging twice is adding once
        self._by_type: dict[type, list[SQLModel]] = {}  # the same rows, by model
        self.active = False  # True while a deferred work runs
        self._remembered: dict[tuple[Any, ...], Any] = {}

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
        return self._remembered[key]  # type: ignore[no-any-return]

    def of_type(self, kind: type[T]) -> list[T]:
        return self._by_type.get(kind, [])  # type: ignore[return-value]

    def flush(self, session: Session) -> None:
        """Insert every staged row, parents before children, one executemany per run of
        rows with the same columns; then forget them and every remembered read."""
        staged, self.rows, self._staged, self._by_type = self.rows, [], set(), {}
        self._remembered.clear()
        by_table: dict[str, list[dict[str, Any]]] = {}
        for row in staged:
            table = row.__table__  # type: ignore[attr-defined]
            columns, keys = _columns_of(table)
            state = row.__dict__  # what the ORM itself reads at insert; no attribute events
            values = {column: state.get(column) for column in columns}
            for key in keys:  # autoincrement ids: the database's
                if values[key] is None:
                    del values[key]
            by_table.setdefault(table.name, []).append(values)
        for table in SQLModel.metadata.sorted_tables:  # foreign keys: parents first
            for rows in _same_columns(by_table.pop(table.name, [])):
                session.execute(table.insert(), rows)
        if by_table:  # pragma: no cover - a model outside the metadata
            raise LookupError(f"no table to flush {sorted(by_table)} into")


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


def buffer_of(session: Session) -> DeferredRows | None:
    """The active buffer of this session's transaction, or None outside a deferred work."""
    buffer: DeferredRows | None = session.info.get(KEY)
    return buffer if buffer is not None and buffer.active else None


def stage(session: Session, row: SQLModel) -> None:
    """`session.add(row)`, held back while a deferred work runs and the row is new."""
    buffer = buffer_of(session)
    if buffer is None or inspect(row).persistent:
        session.add(row)
    else:
        buffer.add(row)


def pending_claims(session: Session) -> list[Claim]:
    buffer = buffer_of(session)
    return buffer.of_type(Claim) if buffer else []


def pending_receipts(session: Session) -> list[Receipt]:
    buffer = buffer_of(session)
    return buffer.of_type(Receipt) if buffer else []


def last_audit_entry(session: Session) -> AuditEntry | None:
    buffer = buffer_of(session)
    entries = buffer.of_type(AuditEntry) if buffer else []
    return entries[-1] if entries else None


def remember(session: Session, key: tuple[Any, ...], read: Callable[[], T]) -> T:
    buffer = buffer_of(session)
    return buffer.remember(key, read) if buffer else read()
