"""rights budgets, key suspension, per-pharmacy rights cache, the daily cap on the NIR

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

- `rights_lookups`: the people counted in each rights budget (per key and per pharmacy,
  per hour and per day), shared by every instance.
- `api_keys.suspended_at`, `suspension_reason`: a key over a budget is suspended until
  operations lift it. The row MAC covers them only while they are set, so the MACs of
  existing rows (none suspended) stay valid and nothing needs the credential key here.
- `rights_cache.finess`: every entry belongs to the pharmacy that looked it up. The
  entries cached so far cannot be attributed to a pharmacy: they are deleted.
- `receipts.beneficiary_hash` now holds the keyed hash of the NIR alone (the claim's
  `nir_hash`), so the per-person daily cap counts a person whatever birth date or rank
  is sent; the covering index `ix_receipts_beneficiary_day` keeps serving the sum.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rights_lookups",
        sa.Column("scope", sa.String(length=40), nullable=False),
        sa.Column("period", sa.String(length=13), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("scope", "period", "subject"),
    )
    op.create_index("ix_rights_lookups_period", "rights_lookups", ["period"], unique=False)

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("suspended_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column("suspension_reason", sa.String(length=200),
                                      nullable=True))

    op.execute("DELETE FROM rights_cache")
    with op.batch_alter_table("rights_cache", schema=None) as batch_op:
        # the table is empty: no default needed (SQLite rebuilds it for the constraint)
        batch_op.add_column(sa.Column("finess", sa.String(length=9), nullable=False))
        batch_op.drop_constraint("uq_rights_cache_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_rights_cache_finess_key", ["finess", "beneficiary_hash", "insurer_number"])

    # the receipts' triggers (0008) follow status, amount, FINESS and operator only
    op.execute(
        "UPDATE receipts SET beneficiary_hash = COALESCE("
        "(SELECT claims.nir_hash FROM claims WHERE claims.id = receipts.claim_id), '')")


def downgrade() -> None:
    """The schema only: receipts keep the NIR's hash (the older hash needs the birth date
    and rank, which only the encrypted payload holds), and the per-pharmacy cache entries
    are deleted (two pharmacies may hold the same person's)."""
    op.execute("DELETE FROM rights_cache")
    with op.batch_alter_table("rights_cache", schema=None) as batch_op:
        batch_op.drop_constraint("uq_rights_cache_finess_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_rights_cache_key", ["beneficiary_hash", "insurer_number"])
        batch_op.drop_column("finess")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("suspension_reason")
        batch_op.drop_column("suspended_at")
    op.drop_index("ix_rights_lookups_period", table_name="rights_lookups")
    op.drop_table("rights_lookups")
