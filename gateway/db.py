"""Engines and sessions: SQLite (WAL, synchronous=FULL, BEGIN IMMEDIATE) or PostgreSQL.

SQLite's driver opens transactions lazily and in DEFERRED mode; a transaction that
reads then writes would then fail at once with SQLITE_BUSY, ignoring the busy
timeout. So the driver's own transaction handling is switched off and every
transaction is begun here, IMMEDIATE unless a session asks to only read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

SQLITE_BUSY_TIMEOUT_S = 30
READ_ONLY = {"sqlite_begin": "DEFERRED"}


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sync_url(url: str) -> str:
    """The URL for synchronous tools (Alembic): pysqlite or psycopg."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def async_url(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def ensure_sqlite_dir(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def configure_sqlite(sync_engine: Any) -> None:
    """Durable WAL settings on every connection, and explicit BEGINs (see module doc)."""

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    ensure_sqlite_dir(url)
    if is_sqlite(url):
        engine = create_async_engine(
            async_url(url), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, **kwargs
        )
        configure_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(async_url(url), pool_pre_ping=True, **kwargs)


class Database:
    """The engine and its session factory; built once in the lifespan."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )
        self._readers = async_sessionmaker(
            self.engine.execution_options(**READ_ONLY),
            class_=AsyncSession,
            expire_on_commit=False,
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session whose transactions take the write lock first (read-then-write safe)."""
        async with self._sessions() as session:
            yield session

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only: on SQLite it does not wait for the write lock."""
        async with self._readers() as session:
            yield session

    async def ping(self) -> None:
        from sqlalchemy import text

        async with self.reader() as session:
            await session.exec(text("SELECT 1"))  # type: ignore[call-overload]

    async def dispose(self) -> None:
        await self.engine.dispose()
