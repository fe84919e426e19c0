"""a pharmacy's claims by status, most recently changed last: the console's lists

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06

The pharmacist's console refreshes every 5 s: the pharmacy's queued claims and their
count, its failed ones, its recent settled ones. The indexes led from the pharmacy to
every claim it ever sent (by id), or from a status to every pharmacy's claims, read
one by one and sorted: ~100 ms a refresh at 6,000 claims for the pharmacy, growing
with every claim it sends. This index holds (finess, status, updated_at): each list
reads its own few entries, the recent ones newest first.
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_claims_pharmacy_status", "claims", ["finess", "status", "updated_at"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_claims_pharmacy_status", table_name="claims")
