"""Migration 0009 (issue 11): a key made before the pepper keeps working after it; the
stored digest is wrapped without the secret; old console sessions are gone; a database
holding keys is not upgraded without the credential key."""

from __future__ import annotations

import hashlib
import os
import secrets

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from gateway.identity.credentials import CredentialKeys
from gateway.security.apikeys import authenticate
from gateway.storage.db import Database, sync_url
from gateway.storage.migrate import alembic_config, upgrade
from gateway.storage.models import utcnow

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")




def old_key(url: str) -> str:
    """A pharmacy key stored as 0008 stored it: the plain SHA-256 of its secret."""
    secret = f"key_{secrets.token_hex(8)}.{secrets.token_urlsafe(32)}"
    engine = create_engine(sync_url(url))
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO api_keys (id, secret_hash, role, finess, created_at) "
            "VALUES (:id, :digest, 'pharmacy', '330001231', :now)"),
            {"id": secret.split(".")[0], "digest": hashlib.sha256(secret.encode()).hexdigest(),
             "now": utcnow()})
        connection.execute(text(
            "INSERT INTO console_sessions (token_hash, key_id, csrf_token, created_at, "
            "last_seen_at) VALUES ('t', :id, 'c', :now, :now)"),
            {"id": secret.split(".")[0], "now": utcnow()})
    engine.dispose()
    return secret


def test_a_key_made_before_the_pepper_still_works_after_it(empty_database: str) -> None:
    command.upgrade(alembic_config(empty_database), "0008")
    secret = old_key(empty_database)
    credentials = CredentialKeys(os.urandom(32))
    upgrade(empty_database, credentials)

    database = Database(empty_database)
    try:
        principal = database.read_connection_now(
            lambda c: authenticate(c, secret, credentials))
        assert principal is not None and principal.finess == "330001231"
        row = database.read_connection_now(lambda c: c.execute(text(
            "SELECT secret_hash, row_mac FROM api_keys")).one())
        assert row.secret_hash != hashlib.sha256(secret.encode()).hexdigest()  # wrapped
        assert row.row_mac
        other = CredentialKeys(os.urandom(32))  # another deployment's pepper opens nothing
        assert database.read_connection_now(lambda c: authenticate(c, secret, other)) is None
        columns = {c["name"] for c in database.read_connection_now(
            lambda c: inspect(c).get_columns("console_sessions"))}
        assert "user_id" in columns and "key_id" not in columns
        assert database.read_connection_now(lambda c: c.execute(text(
            "SELECT count(*) FROM console_sessions")).scalar_one()) == 0
    finally:
        database.engine.dispose()


def test_keys_are_not_upgraded_without_the_credential_key(empty_database: str) -> None:
    command.upgrade(alembic_config(empty_database), "0008")
    old_key(empty_database)
    with pytest.raises(RuntimeError, match="credential_key"):
        upgrade(empty_database)
    engine = create_engine(sync_url(empty_database))
    with engine.connect() as connection:  # nothing half done: still at 0008
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()
    assert version == "0008"
