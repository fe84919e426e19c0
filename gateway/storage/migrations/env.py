"""Alembic environment: the URL comes from the caller (`storage.migrate`), never a file."""

from __future__ import annotations

from typing import cast

from alembic import context
from sqlalchemy import create_engine, pool
from sqlmodel import SQLModel

import gateway.storage.models  # noqa: F401  (registers the tables on the metadata)

config = context.config
url = cast(str, config.get_main_option("sqlalchemy.url"))  # storage.migrate always sets it
connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
