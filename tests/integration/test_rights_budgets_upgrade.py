"""Migration 0010 (issue 12): keys sealed before it keep working (the MAC covers the
suspension only while set), cached rights no pharmacy can be attributed are deleted, and
receipts carry the NIR's hash for the daily cap."""

from __future__ import annotations

import os
from datetime import date, timedelta

from alembic import command
from sqlalchemy import MetaData, Table, create_engine, text

from gateway.identity.credentials import CredentialKeys
from gateway.security.apikeys import authenticate, new_key
from gateway.storage.db import Database, sync_url
from gateway.storage.migrate import alembic_config, upgrade
from gateway.storage.models import utcnow

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")
NOW = utcnow()




def rows_of_0009(url: str, credentials: CredentialKeys) -> str:
    """A key sealed as 0009 sealed it, a rights cache entry, a claim and its receipt."""
    row, secret = new_key(role="pharmacy", finess="330001231", credentials=credentials)
    engine = create_engine(sync_url(url))
    with engine.begin() as connection:
        tables = MetaData()
        table = {name: Table(name, tables, autoload_with=connection)
                 for name in ("api_keys", "rights_cache", "claims", "receipts")}
        connection.execute(table["api_keys"].insert(), {
            "id": row.id, "secret_hash": row.secret_hash, "role": row.role,
            "finess": row.finess, "created_at": NOW, "row_mac": row.row_mac})
        connection.execute(table["rights_cache"].insert(), {
            "beneficiary_hash": "b" * 64, "insurer_number": "801234567",
            "answer_enc": b"\x01sealed", "as_of": NOW})
        connection.execute(table["claims"].insert(), {
            "id": "clm_1", "finess": "330001231", "invoice_number": "F-1",
            "request_hash": "r" * 64, "nir_hash": "n" * 64, "beneficiary_hash": "b" * 64,
            "operator": "opera", "insurer_number": "80000001",
            "service_date": date(2026, 11, 2), "status": "queued", "attempts": 0,
            "maybe_sent": False, "cancellation_pending": False, "amc_requested_cents": 280,
            "payload_enc": b"\x01sealed", "coverage_decision": "provisional",
            "created_at": NOW, "updated_at": NOW, "queued_at": NOW})
        connection.execute(table["receipts"].insert(), {
            "id": "rcp_1", "claim_id": "clm_1", "finess": "330001231", "operator": "opera",
            "insurer_number": "80000001", "invoice_number": "F-1",
            "beneficiary_hash": "b" * 64, "service_date": date(2026, 11, 2),
            "amc_cents": 280, "patient_due_cents": 0, "basis": "card",
            "status": "provisional", "kid": "k1", "token": "a.b.c", "issued_at": NOW,
            "expires_at": NOW + timedelta(days=30), "updated_at": NOW})
    engine.dispose()
    return secret


def test_0010_keeps_keys_drops_unattributable_rights_and_moves_the_cap_to_the_nir(
        empty_database: str) -> None:
    credentials = CredentialKeys(os.urandom(32))
    command.upgrade(alembic_config(empty_database, credentials), "0009")
    secret = rows_of_0009(empty_database, credentials)
    upgrade(empty_database, credentials)

    database = Database(empty_database)
    try:
        principal = database.read_connection_now(
            lambda c: authenticate(c, secret, credentials))
        assert principal is not None and principal.finess == "330001231"
        assert database.read_connection_now(lambda c: c.execute(text(
            "SELECT count(*) FROM rights_cache")).scalar_one()) == 0
        assert database.read_connection_now(lambda c: c.execute(text(
            "SELECT beneficiary_hash FROM receipts")).scalar_one()) == "n" * 64
        assert database.read_connection_now(lambda c: c.execute(text(
            "SELECT outstanding_cents FROM receipt_exposure")).scalar_one()) == 280
    finally:
        database.engine.dispose()
