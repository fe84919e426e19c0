"""Shared fixtures: a real database per test (SQLite, and PostgreSQL when configured),
the gateway app with in-process simulated operators, and API keys.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import lifespan_watch
import pytest
from argon2 import PasswordHasher
from asgi_lifespan import LifespanManager
from handover_support import handover_config
from hypothesis import settings as hypothesis_settings
from operator_settings import operator_config
from sqlalchemy import create_engine, text

# The gateway is imported by the fixtures that use it, not here: with pytest-xdist the
# controlling process loads this file too, before any worker starts, and runs no test.
if TYPE_CHECKING:
    from fastapi import FastAPI

    from gateway.settings import Settings

# `make test` must give the same answer every time: the default profile replays the same
# examples (derandomized). `HYPOTHESIS_PROFILE=explore make test` looks for new ones.
hypothesis_settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("explore", derandomize=False, print_blob=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


lifespan_watch.install()



def worker_database(url: str) -> str:
    """Under `pytest -n` (make test runs the in-process tests so), each worker gets a
    database of its own on the configured server, named after the configured one
    (`test_gw0`, `test_gw1`, ...), which it empties and migrates on its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    base, _, name = url.rpartition("/")
    return f"{base}/{name}_{worker}"


CONFIGURED_POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")
POSTGRES_URL = worker_database(CONFIGURED_POSTGRES_URL)
TABLES = ("handover_claims", "handover_batches", "claim_history", "events", "audit_log",
          "replays", "operator_controls", "receipts", "receipt_exposure", "queue_depth",
          "console_sessions", "users", "login_throttle",
          "data_keys", "audit_heads", "claims", "rights_cache", "rights_lookups", "api_keys",
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


# argon2id with small parameters (as tests/console_people.py's CHEAP_HASHER): the
# gateway's own profile (t=3, m=64 MiB, p=4) costs ~0.2 s a hash or a check, and a login
# test hashes and checks several. tests/unit/test_password_hashing.py, marked
# `real_password_hashing`, holds the gateway to its profile.
CHEAP_PASSWORD_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
CHEAP_DECOY = CHEAP_PASSWORD_HASHER.hash("a decoy nobody knows")


@pytest.fixture(autouse=True)
def cheap_password_hashing(request: pytest.FixtureRequest,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Console passwords hashed and checked with cheap argon2id parameters in process
    (unless the test is marked `real_password_hashing`): what is asserted (a hash is
    argon2id, a check happens or not, how many) does not depend on the cost."""
    if request.node.get_closest_marker("real_password_hashing") is None:
        from gateway.identity import passwords

        monkeypatch.setattr(passwords, "HASHER", CHEAP_PASSWORD_HASHER)
        monkeypatch.setattr(passwords, "_decoy", lambda: CHEAP_DECOY)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file, copied for each test (migrating costs more than copying)."""
    from gateway.storage.migrate import upgrade

    path = tmp_path_factory.mktemp("template") / "gateway.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def migrated_sqlite(sqlite_template: Path) -> Callable[[str | Path], str]:
    """Puts a migrated SQLite database at a path and returns its URL: a copy of the
    session's template, the same schema as `upgrade(url)` on an empty file at a fraction
    of its cost (the migrations run once per run, not once per test)."""
    def make(where: str | Path) -> str:
        path = Path(str(where).removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sqlite_template, path)
        return f"sqlite:///{path}"
    return make


@pytest.fixture(scope="session")
def postgres_migrated() -> str:
    """The test database, emptied and migrated from nothing once per run: a schema left by
    an earlier run of other code (a migration since changed) never leaks into this one."""
    from gateway.storage.db import sync_url
    from gateway.storage.migrate import upgrade

    if POSTGRES_URL != CONFIGURED_POSTGRES_URL:  # this worker's own database
        name = POSTGRES_URL.rsplit("/", 1)[1]
        admin = create_engine(sync_url(CONFIGURED_POSTGRES_URL), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            if connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                  {"name": name}).first() is None:
                connection.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
    engine = create_engine(sync_url(POSTGRES_URL))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade(POSTGRES_URL)
    return POSTGRES_URL


def _truncate_postgres(url: str) -> None:
    from gateway.storage.db import sync_url

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
    from gateway.storage.db import sync_url

    admin = create_engine(sync_url(CONFIGURED_POSTGRES_URL), isolation_level="AUTOCOMMIT")
    name = f"gateway_migration_{os.getpid()}"
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    yield sync_url(POSTGRES_URL).rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture(scope="session")
def memory_dir() -> Iterator[Path | None]:
    """A directory on tmpfs (/dev/shm) for the in-process tests' SQLite files, removed at
    the end of the run; None where there is none. The gateway opens SQLite with
    synchronous=FULL: on a disk every commit waits for an fsync, which no in-process test
    can observe (a killed process loses nothing either way) and which made a third of the
    integration tests' time."""
    shm = Path("/dev/shm")  # noqa: S108 - a private directory made with mkdtemp (0700)
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="gateway-tests-", dir=shm))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for this test, on each configured backend (SQLite: on
    tmpfs for in-process tests; end-to-end tests, whose real processes restart, get killed
    and share the file, keep it on disk under tmp_path)."""
    if request.param == "sqlite":
        memory = None if "e2e" in request.node.path.parts else (
            request.getfixturevalue("memory_dir"))
        directory = Path(tempfile.mkdtemp(dir=memory)) if memory else tmp_path
        target = directory / "gateway.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite:///{target}"
        if memory:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        url = request.getfixturevalue("postgres_migrated")
        _truncate_postgres(url)
        yield url


@pytest.fixture
async def database(database_url: str, anyio_backend: str) -> AsyncIterator[Any]:
    """The gateway's `Database` (engines, write groups) on this test's fresh database."""
    from gateway.storage.db import Database

    db = Database(database_url)
    yield db
    await db.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    from gateway.settings import Settings

    return Settings(
        environment="development",
        database_url=database_url,
        data_dir=tmp_path / "data",
        operators=[
            # opera takes batches too (tests/handover_support.py): santex does not
            operator_config("opera", ["80*", "123456789"], **handover_config()),
            operator_config("santex", ["90*"], provisional="cached_rights"),
        ],
    )


class Simulators(Mapping[str, "FastAPI"]):
    """The test's simulated operators by name, each made when first used: most tests never
    reach `santex`, many reach no operator, and making one (a FastAPI app) is a good part
    of a test's set-up. Read like the dict it stands for."""

    NAMES = ("opera", "santex")

    def __init__(self) -> None:
        self._made: dict[str, FastAPI] = {}

    def __getitem__(self, name: str) -> FastAPI:
        if name not in self.NAMES:
            raise KeyError(name)
        if name not in self._made:
            from adapters.simulator import create_simulator

            self._made[name] = create_simulator(name)
        return self._made[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)

    def transport(self, name: str) -> httpx.ASGITransport:
        """A transport to the simulator, which is made at the first request through it."""
        async def deferred(scope: Any, receive: Any, send: Any) -> None:
            await self[name](scope, receive, send)
        return httpx.ASGITransport(deferred)


@pytest.fixture
def simulators() -> Simulators:
    return Simulators()


@pytest.fixture
async def app(
    request: pytest.FixtureRequest, settings: Settings, simulators: Simulators,
    anyio_backend: str,
) -> AsyncIterator[FastAPI]:
    """The gateway; its drain workers and probers run only for tests marked `workers`."""
    from gateway.main import create_app

    transports = {name: simulators.transport(name) for name in simulators}
    application = create_app(settings, transports=transports, configure_logs=False,
                             run_workers=request.node.get_closest_marker("workers") is not None)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
        yield http


async def _key(settings: Settings, app: FastAPI, **kwargs: Any) -> dict[str, str]:
    """A key made as `gateway keys create` makes it, in one transaction on the running
    app's database (a new engine for each key, as the CLI opens, costs several times more)."""
    from gateway.keys import admin as keys_admin
    from gateway.keys.admin import create_key

    database = app.state.context.db
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keys_admin, "_once", lambda _, work: database.write_now(work))
        _, secret = create_key(settings, **kwargs)
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def pharmacy(settings: Settings, app: FastAPI) -> dict[str, str]:
    """Authorization headers of a pharmacy key bound to FINESS 330001231."""
    return await _key(settings, app, role="pharmacy", finess="330001231")


@pytest.fixture
async def other_pharmacy(settings: Settings, app: FastAPI) -> dict[str, str]:
    return await _key(settings, app, role="pharmacy", finess="690000880")


@pytest.fixture
async def operations(settings: Settings, app: FastAPI) -> dict[str, str]:
    return await _key(settings, app, role="operations")
