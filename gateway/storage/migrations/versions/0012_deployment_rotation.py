"""deployment id, data key generations

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

`deployment` holds one row, inserted here with a random id: the namespace of everything
this database's instances share outside it (Redis keys and channels, audit anchors).
`data_keys.retired_at`: a rotated data key still decrypts, but no new record uses it.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    deployment = op.create_table(
        "deployment",
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("slot"),
        sa.UniqueConstraint("id", name="uq_deployment_id"),
    )
    op.bulk_insert(deployment, [{"slot": 1, "id": f"dep_{secrets.token_hex(8)}",
                                 "created_at": datetime.now(UTC)}])
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.drop_column("retired_at")
    op.drop_table("deployment")
