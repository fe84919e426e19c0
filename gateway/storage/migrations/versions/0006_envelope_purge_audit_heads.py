"""envelope keys, purge, audit mac and heads

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_heads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=200), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "data_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("master_kid", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_data_keys_scope"), ["scope"], unique=False)

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("entry_mac", sa.String(length=64), nullable=False, server_default="")
        )

    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_key_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_claims_data_key_id"), ["data_key_id"], unique=False)

    with op.batch_alter_table("rights_cache", schema=None) as batch_op:
        batch_op.add_column(sa.Column("data_key_id", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_rights_cache_data_key_id"), ["data_key_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("rights_cache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rights_cache_data_key_id"))
        batch_op.drop_column("data_key_id")

    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claims_data_key_id"))
        batch_op.drop_column("purged_at")
        batch_op.drop_column("data_key_id")

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("entry_mac")

    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_data_keys_scope"))

    op.drop_table("data_keys")
    op.drop_table("audit_heads")
