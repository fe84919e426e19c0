"""rate limits shared by every instance

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

Rate limits counted per process let N instances grant N times every limit. Without
Redis, instances share their counts here: hits per bucket and 5 s slot
(`rate_windows`), and the few long-polls a key may hold at once (`long_poll_slots`).
Both hold keyed hashes only, and rows a few minutes old are deleted as they go.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_windows",
        sa.Column("bucket", sa.String(64), primary_key=True),
        sa.Column("window_start", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("hits", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index("ix_rate_windows_window_start", "rate_windows", ["window_start"])
    op.create_table(
        "long_poll_slots",
        sa.Column("bucket", sa.String(64), primary_key=True),
        sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("holder", sa.String(40), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_long_poll_slots_expires_at", "long_poll_slots", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_long_poll_slots_expires_at", table_name="long_poll_slots")
    op.drop_table("long_poll_slots")
    op.drop_index("ix_rate_windows_window_start", table_name="rate_windows")
    op.drop_table("rate_windows")
