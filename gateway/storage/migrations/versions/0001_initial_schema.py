"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("finess", sa.String(length=9), nullable=True),
        sa.Column("operators", sa.String(length=500), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_finess"), ["finess"], unique=False)

    op.create_table(
        "claims",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("finess", sa.String(length=9), nullable=False),
        sa.Column("invoice_number", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("nir_hash", sa.String(length=64), nullable=False),
        sa.Column("beneficiary_hash", sa.String(length=64), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("insurer_number", sa.String(length=12), nullable=False),
        sa.Column("service_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("amc_requested_cents", sa.Integer(), nullable=False),
        sa.Column("amc_covered_cents", sa.Integer(), nullable=True),
        sa.Column("rejection_code", sa.String(length=64), nullable=True),
        sa.Column("rejection_label", sa.String(length=500), nullable=True),
        sa.Column("operator_reference", sa.String(length=128), nullable=True),
        sa.Column("first_http_status", sa.Integer(), nullable=True),
        sa.Column("cancellation_pending", sa.Boolean(), nullable=False),
        sa.Column("coverage_decision", sa.String(length=16), nullable=False),
        sa.Column("coverage_reason", sa.String(length=40), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("payload_enc", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("finess", "idempotency_key", name="uq_claims_finess_idempotency_key"),
        sa.UniqueConstraint("finess", "invoice_number", name="uq_claims_finess_invoice"),
    )
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_claims_beneficiary_hash"), ["beneficiary_hash"], unique=False
        )
        batch_op.create_index("ix_claims_finess_id", ["finess", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_claims_nir_hash"), ["nir_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_claims_operator"), ["operator"], unique=False)
        batch_op.create_index(batch_op.f("ix_claims_status"), ["status"], unique=False)

    op.create_table(
        "rights_cache",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("beneficiary_hash", sa.String(length=64), nullable=False),
        sa.Column("insurer_number", sa.String(length=12), nullable=False),
        sa.Column("answer_enc", sa.LargeBinary(), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("beneficiary_hash", "insurer_number", name="uq_rights_cache_key"),
    )
    with op.batch_alter_table("rights_cache", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rights_cache_as_of"), ["as_of"], unique=False)

    op.create_table(
        "claim_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("claim_id", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["claim_id"],
            ["claims.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("claim_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_claim_history_claim_id"), ["claim_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("claim_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claim_history_claim_id"))

    op.drop_table("claim_history")
    with op.batch_alter_table("rights_cache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rights_cache_as_of"))

    op.drop_table("rights_cache")
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claims_status"))
        batch_op.drop_index(batch_op.f("ix_claims_operator"))
        batch_op.drop_index(batch_op.f("ix_claims_nir_hash"))
        batch_op.drop_index("ix_claims_finess_id")
        batch_op.drop_index(batch_op.f("ix_claims_beneficiary_hash"))

    op.drop_table("claims")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_finess"))

    op.drop_table("api_keys")
