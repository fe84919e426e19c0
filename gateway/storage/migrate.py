"""Apply the Alembic migrations shipped inside the package (no alembic.ini needed)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from gateway.identity.credentials import CredentialKeys
from gateway.storage.db import create_engine, ensure_sqlite_dir, is_sqlite, sync_url

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(database_url: str, credentials: CredentialKeys | None = None) -> Config:
    config = Config()
    config.attributes["credentials"] = credentials  # migration 0009 wraps key digests
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, credentials: CredentialKeys | None = None) -> None:
    """Bring the schema to head; `credentials` (from the settings) lets a migration seal
    rows that already exist (0009: API keys)."""
    ensure_sqlite_dir(database_url)
    command.upgrade(alembic_config(database_url, credentials), "head")
    if is_sqlite(database_url):
        engine = create_engine(database_url)  # its connect hook switches the file to WAL
        with engine.connect():
            pass
        engine.dispose()
