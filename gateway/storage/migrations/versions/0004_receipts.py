"""receipts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("claim_id", sa.String(length=40), nullable=False),
        sa.Column("finess", sa.String(length=9), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("insurer_number", sa.String(length=12), nullable=False),
        sa.Column("invoice_number", sa.String(length=40), nullable=False),
        sa.Column("beneficiary_hash", sa.String(length=64), nullable=False),
        sa.Column("service_date", sa.Date(), nullable=False),
        sa.Column("amc_cents", sa.Integer(), nullable=False),
        sa.Column("patient_due_cents", sa.Integer(), nullable=False),
        sa.Column("basis", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=2000), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["claim_id"],
            ["claims.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("claim_id"),
    )
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_receipts_beneficiary_day", ["beneficiary_hash", "service_date"], unique=False
        )
        batch_op.create_index("ix_receipts_finess_status", ["finess", "status"], unique=False)
        batch_op.create_index(batch_op.f("ix_receipts_operator"), ["operator"], unique=False)

    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.add_column(sa.Column("coverage_json", sa.String(length=2000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_column("coverage_json")

    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_receipts_operator"))
        batch_op.drop_index("ix_receipts_finess_status")
        batch_op.drop_index("ix_receipts_beneficiary_day")

    op.drop_table("receipts")
