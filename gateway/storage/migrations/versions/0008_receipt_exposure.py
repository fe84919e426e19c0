"""a running outstanding total per pharmacy and operator, kept by triggers

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

The outstanding cap summed every open receipt of the pharmacy for every queued
claim: through an outage of days that is thousands of rows read per claim, on
SQLite's single writer. `receipt_exposure` holds the sum instead, one row per
pharmacy and operator, moved by triggers on `receipts` in the transaction that
inserts, changes or deletes a receipt, whatever code does it. The covering index
the sum read (`ix_receipts_finess_status`) goes, and so does `ix_receipts_operator`,
which no query reads: two indexes fewer to write per receipt.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# SQLite: one trigger per kind of change, each a statement or two of plain SQL.
_ADD = """INSERT INTO receipt_exposure (finess, operator, outstanding_cents)
    SELECT NEW.finess, NEW.operator, NEW.amc_cents WHERE NEW.status = 'provisional'
    ON CONFLICT (finess, operator)
    DO UPDATE SET outstanding_cents = outstanding_cents + excluded.outstanding_cents;"""
_TAKE = """UPDATE receipt_exposure SET outstanding_cents = outstanding_cents - OLD.amc_cents
    WHERE OLD.status = 'provisional' AND finess = OLD.finess AND operator = OLD.operator;"""
SQLITE_TRIGGERS = {
    "receipts_exposure_insert": f"AFTER INSERT ON receipts BEGIN {_ADD} END",
    "receipts_exposure_update": (
        "AFTER UPDATE OF status, amc_cents, finess, operator ON receipts "
        f"BEGIN {_TAKE} {_ADD} END"),
    "receipts_exposure_delete": f"AFTER DELETE ON receipts BEGIN {_TAKE} END",
}

POSTGRES_FUNCTION = """
CREATE FUNCTION receipts_exposure_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.status = 'provisional' THEN
            UPDATE receipt_exposure SET outstanding_cents = outstanding_cents - OLD.amc_cents
            WHERE finess = OLD.finess AND operator = OLD.operator;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.status = 'provisional' THEN
            INSERT INTO receipt_exposure (finess, operator, outstanding_cents)
            VALUES (NEW.finess, NEW.operator, NEW.amc_cents)
            ON CONFLICT (finess, operator) DO UPDATE
            SET outstanding_cents = receipt_exposure.outstanding_cents
                                    + EXCLUDED.outstanding_cents;
        END IF;
    END IF;
    RETURN NULL;
END $$
"""
POSTGRES_TRIGGER = """
CREATE TRIGGER receipts_exposure
AFTER INSERT OR UPDATE OF status, amc_cents, finess, operator OR DELETE ON receipts
FOR EACH ROW EXECUTE FUNCTION receipts_exposure_follow()
"""


def upgrade() -> None:
    op.create_table(
        "receipt_exposure",
        sa.Column("finess", sa.String(length=9), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("outstanding_cents", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("finess", "operator"),
    )
    op.execute(
        "INSERT INTO receipt_exposure (finess, operator, outstanding_cents) "
        "SELECT finess, operator, SUM(amc_cents) FROM receipts "
        "WHERE status = 'provisional' GROUP BY finess, operator")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    op.drop_index("ix_receipts_finess_status", table_name="receipts")
    op.drop_index("ix_receipts_operator", table_name="receipts")


def downgrade() -> None:
    op.create_index("ix_receipts_operator", "receipts", ["operator"], unique=False)
    op.create_index("ix_receipts_finess_status", "receipts",
                    ["finess", "status", "amc_cents"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER receipts_exposure ON receipts")
        op.execute("DROP FUNCTION receipts_exposure_follow()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("receipt_exposure")
