"""The outstanding total the cap reads is kept by the database (migration 0008): every
way a receipt changes moves it, and the migration fills it from receipts already open."""

from __future__ import annotations

from datetime import date, timedelta

from alembic import command
from sqlalchemy import Connection, create_engine, delete, event, func, inspect, select, update

from gateway.receipts import repository
from gateway.storage.db import sync_url
from gateway.storage.migrate import alembic_config
from gateway.storage.models import Claim, Receipt, utcnow
from gateway.storage.unit import UnitOfWork

NOW = utcnow()
CLAIMS, RECEIPTS = Claim.__table__, Receipt.__table__  # type: ignore[attr-defined]
# (finess, operator, AMC cents, status): two pharmacies, two operators, closed ones too
ISSUED = [("330001231", "opera", 1_500, "provisional"),
          ("330001231", "opera", 2_250, "provisional"),
          ("330001231", "santex", 700, "provisional"),
          ("330001231", "opera", 9_999, "honored"),
          ("690000880", "opera", 4_000, "provisional"),
          ("690000880", "santex", 50, "void")]


def add_receipts(connection: Connection, issued: list[tuple[str, str, int, str]]) -> None:
    for n, (finess, operator, cents, status) in enumerate(issued):
        claim_id = f"clm_{n}"
        connection.execute(CLAIMS.insert(), {
            "id": claim_id, "finess": finess, "invoice_number": f"F-{n}",
            "request_hash": "r" * 64, "nir_hash": "n" * 64, "beneficiary_hash": "b" * 64,
            "operator": operator, "insurer_number": "80000001",
            "service_date": date(2026, 11, 2), "status": "queued", "attempts": 0,
            "maybe_sent": False, "cancellation_pending": False, "amc_requested_cents": cents,
            "payload_enc": b"\x01sealed",
            "coverage_decision": "provisional", "idempotency_key": f"idem-{n}",
            "created_at": NOW, "updated_at": NOW, "queued_at": NOW})
        connection.execute(RECEIPTS.insert(), {
            "id": f"rcp_{n}", "claim_id": claim_id, "finess": finess, "operator": operator,
            "insurer_number": "80000001", "invoice_number": f"F-{n}",
            "beneficiary_hash": "b" * 64, "service_date": date(2026, 11, 2),
            "amc_cents": cents, "patient_due_cents": 0, "basis": "card", "status": status,
            "kid": "k1", "token": "a.b.c", "issued_at": NOW,
            "expires_at": NOW + timedelta(days=30), "updated_at": NOW})


def kept(connection: Connection) -> dict[str, dict[str, int]]:
    """What the cap and the exposure endpoint read, per pharmacy."""
    with UnitOfWork(bind=connection) as session:
        return {finess: repository.outstanding_by_operator(session, finess)
                for finess in ("330001231", "690000880")}


def summed(connection: Connection) -> dict[str, dict[str, int]]:
    """The same figures summed from the receipts themselves."""
    totals: dict[str, dict[str, int]] = {"330001231": {}, "690000880": {}}
    for finess, operator, cents in connection.execute(
            select(RECEIPTS.c.finess, RECEIPTS.c.operator, func.sum(RECEIPTS.c.amc_cents))
            .where(RECEIPTS.c.status == "provisional")
            .group_by(RECEIPTS.c.finess, RECEIPTS.c.operator)):
        totals[finess][operator] = int(cents)
    return totals


def set_receipt(connection: Connection, n: int, **values: object) -> None:
    connection.execute(update(RECEIPTS).where(RECEIPTS.c.id == f"rcp_{n}").values(**values))


def test_every_change_of_a_receipt_moves_the_outstanding_total(database_url: str) -> None:
    engine = create_engine(sync_url(database_url))
    with engine.begin() as connection:
        add_receipts(connection, ISSUED)
        assert kept(connection) == {"330001231": {"opera": 3_750, "santex": 700},
                                    "690000880": {"opera": 4_000}}
        with UnitOfWork(bind=connection) as session:
            sent: list[str] = []
            event.listen(engine, "before_cursor_execute",
                         lambda conn, cursor, statement, *args: sent.append(statement))
            # both sums of a claim's receipt decision, in one statement (void ones aside)
            assert repository.exposure_of_claim(
                session, "b" * 64, date(2026, 11, 2), "330001231") == (18_449, 4_450)
            assert len(sent) == 1
        steps = [
            lambda: set_receipt(connection, 0, status="honored"),    # the operator accepted
            lambda: set_receipt(connection, 1, status="contested"),  # the operator rejected
            lambda: set_receipt(connection, 4, status="void"),       # the claim was cancelled
            lambda: set_receipt(connection, 3, status="provisional"),  # reopened
            lambda: set_receipt(connection, 2, amc_cents=800),       # an open amount changed
            lambda: set_receipt(connection, 1, amc_cents=5),         # a closed one: no effect
            lambda: set_receipt(connection, 3, updated_at=NOW),      # no figure changed
            lambda: connection.execute(delete(RECEIPTS).where(RECEIPTS.c.id == "rcp_2")),
            lambda: connection.execute(delete(RECEIPTS).where(RECEIPTS.c.id == "rcp_5")),
        ]
        for number, step in enumerate(steps):
            step()
            assert kept(connection) == summed(connection), f"after step {number}"
        assert kept(connection) == {"330001231": {"opera": 9_999}, "690000880": {}}
    engine.dispose()




def test_the_migration_counts_the_receipts_already_open(empty_database: str) -> None:
    config = alembic_config(empty_database)
    command.upgrade(config, "0007")
    engine = create_engine(sync_url(empty_database))
    with engine.begin() as connection:
        add_receipts(connection, ISSUED)
    command.upgrade(config, "0008")
    with engine.begin() as connection:
        assert kept(connection) == {"330001231": {"opera": 3_750, "santex": 700},
                                    "690000880": {"opera": 4_000}}
        assert not {"ix_receipts_finess_status", "ix_receipts_operator"} & index_names(connection)
        set_receipt(connection, 0, status="honored")  # the triggers run from now on
        assert kept(connection)["330001231"] == {"opera": 2_250, "santex": 700}

    command.downgrade(config, "0007")
    with engine.begin() as connection:
        assert {"ix_receipts_finess_status", "ix_receipts_operator"} <= index_names(connection)
        assert "receipt_exposure" not in inspect(connection).get_table_names()
        set_receipt(connection, 1, status="honored")  # no trigger left to fail on
    command.upgrade(config, "head")
    with engine.begin() as connection:
        assert kept(connection)["330001231"] == {"santex": 700}
    engine.dispose()


def index_names(connection: Connection) -> set[str]:
    return {index["name"] for index in inspect(connection).get_indexes("receipts")}
