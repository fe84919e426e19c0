"""a beneficiary's claims at one pharmacy and insurer, by status and change

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06

When the rights cache has no answer for a claim about to be queued to an operator whose
receipts go by cached rights, the receipt policy reads this pharmacy's recent accepted
claims for the beneficiary and insurer, inside the intake's write transaction. With
only `beneficiary_hash` indexed, SQLite, which has no statistics, chose the status index
instead and read every accepted claim in the database (115-200 ms a claim at 270,000
accepted claims; under 1 ms with this index). The index on `beneficiary_hash` alone served
nothing else, so it is replaced, not added to. It holds every column the query asks
for (beneficiary_hash, finess, insurer_number, status, updated_at), so that no other
index of the pharmacy's claims by status (0019) looks as good to a planner without
statistics; a claim's answer rewrites its entry, as it does the other status indexes'.
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_claims_beneficiary_rights", "claims",
                    ["beneficiary_hash", "finess", "insurer_number", "status", "updated_at"],
                    unique=False)
    op.drop_index("ix_claims_beneficiary_hash", table_name="claims")


def downgrade() -> None:
    op.create_index("ix_claims_beneficiary_hash", "claims", ["beneficiary_hash"], unique=False)
    op.drop_index("ix_claims_beneficiary_rights", table_name="claims")
