"""Shared fixtures: a real database per test (SQLite, and PostgreSQL when configured),
the gateway app with in-process simulated operators, and API keys.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import settings as hypothesis_settings
from operator_settings import operator_config
from sqlalchemy import create_engine, text

from adapters.simulator import create_simulator
from gateway.keys.admin import create_key
from gateway.main import create_app
from gateway.settings import Settings
from gateway.storage.db import sync_url
from gateway.storage.migrate import upgrade

# `make test` must give the same answer every time: the default profile replays the same
# examples (derandomized). `HYPOTHESIS_PROFILE=explore make test` looks for new ones.
hypothesis_settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")
TABLES = ("claim_history", "events", "audit_log", "replays", "operator_controls", "receipts",
          "receipt_exposure", "console_sessions", "users", "login_throttle", "data_keys",
          "audit_heads", "claims", "rights_cache", "rights_lookups", "api_keys",
          "webhook_cursors", "rate_windows", "long_poll_slots",
          "deployment")
BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """A test that configures logging (`configure_logging`) points the root handler at
    that test's captured stderr, closed afterwards: later tests would print "Logging
    error" wherever a library logs (alembic in an in-process CLI call). Undo it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test (migrating costs more than copying)."""
    path = tmp_path_factory.mktemp("template") / "gateway.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_migrated() -> str:
    """The test database, emptied and migrated from nothing once per run: a schema left by
    an earlier run of other code (a migration since changed) never leaks into this one."""
    engine = create_engine(sync_url(POSTGRES_URL))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade(POSTGRES_URL)
    return POSTGRES_URL


def _truncate_postgres(url: str) -> None:
    engine = create_engine(sync_url(url))
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database no migration has touched, for migration tests (on PostgreSQL, one made
    for this test on the configured server and dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrating.db'}"
        return
    admin = create_engine(sync_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    name = f"gateway_migration_{os.getpid()}"
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    yield sync_url(POSTGRES_URL).rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for this test, on each configured backend."""
    if request.param == "sqlite":
        target = tmp_path / "gateway.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite:///{target}"
    else:
        url = request.getfixturevalue("postgres_migrated")
        _truncate_postgres(url)
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="development",
        database_url=database_url,
        data_dir=tmp_path / "data",
        operators=[
            operator_config("opera", ["80*", "123456789"]),
            operator_config("santex", ["90*"], provisional="cached_rights"),
        ],
    )


@pytest.fixture
def simulators() -> dict[str, FastAPI]:
    return {"opera": create_simulator("opera"), "santex": create_simulator("santex")}


@pytest.fixture
async def app(
    request: pytest.FixtureRequest, settings: Settings, simulators: dict[str, FastAPI],
    anyio_backend: str,
) -> AsyncIterator[FastAPI]:
    """The gateway; its drain workers and probers run only for tests marked `workers`."""
    transports = {name: httpx.ASGITransport(sim) for name, sim in simulators.items()}
    application = create_app(settings, transports=transports, configure_logs=False,
                             run_workers=request.node.get_closest_marker("workers") is not None)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
        yield http


async def _key(settings: Settings, **kwargs: Any) -> dict[str, str]:
    _, secret = create_key(settings, **kwargs)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def pharmacy(settings: Settings, app: FastAPI) -> dict[str, str]:
    """Authorization headers of a pharmacy key bound to FINESS 330001231."""
    return await _key(settings, role="pharmacy", finess="330001231")


@pytest.fixture
async def other_pharmacy(settings: Settings, app: FastAPI) -> dict[str, str]:
    return await _key(settings, role="pharmacy", finess="690000880")


@pytest.fixture
async def operations(settings: Settings, app: FastAPI) -> dict[str, str]:
    return await _key(settings, role="operations")
