"""claims awaiting a cancellation: a partial index

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06

Every drain step, and every half second while an operator's queue is empty, the drain
asks for the operator's accepted claims whose cancellation is still to be sent. No
index answered that: the queue index (operator, status, queued_at) led to every accepted
claim of the operator, read one by one, then sorted (71-116 ms at 300,000 accepted
claims on SQLite, growing with every claim ever accepted). This index holds only the
claims waiting for their cancellation to be sent, a handful at any time. Its predicate
is written as the query's own term (`cancellation_pending IS 1` / `IS true`), so that
each database's planner can prove the query stays inside it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

NAME = "ix_claims_cancellations"


def upgrade() -> None:
    op.create_index(NAME, "claims", ["operator", "updated_at"], unique=False,
                    sqlite_where=sa.text("cancellation_pending IS 1"),
                    postgresql_where=sa.text("cancellation_pending IS true"))


def downgrade() -> None:
    op.drop_index(NAME, table_name="claims")
