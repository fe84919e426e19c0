"""hand-over batches: claims `exported` in a signed batch file, and the batches

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06

A claim handed over to its operator in a batch file (gateway.handover) is `exported`:
held from the live drain (which leases `queued` claims only) until the operator's
acknowledgement settles it, or the batch is released back to the queue. `handover_batches`
holds each batch (its state, who, when, how many, the digest of its signed content);
`handover_claims` which claims it holds (a claim released and exported again is in two).

`exported` joins the statuses the queue counts keep (migration 0015): the triggers and,
on PostgreSQL, their function are made again with it. No claim is `exported` before this
migration, so there is nothing to count; a downgrade puts exported claims back in the
queue first (their operator dedupes by idempotency key if it had them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BEFORE = "('queued', 'pending', 'failed')"
AFTER = "('queued', 'pending', 'failed', 'exported')"
SLOTS = 64


def _move(row: str, delta: str, slot: str, counted: str) -> str:
    """Add `delta` to the count of `row`'s (operator, status) in `slot` (as 0015)."""
    return (f"INSERT INTO queue_depth (operator, status, slot, claims) "
            f"SELECT {row}.operator, {row}.status, {slot}, {delta} "
            f"WHERE {row}.status IN {counted} "
            "ON CONFLICT (operator, status, slot) "
            "DO UPDATE SET claims = queue_depth.claims + excluded.claims;")


def sqlite_triggers(counted: str) -> dict[str, str]:
    changed = ("(OLD.status IS NOT NEW.status OR OLD.operator IS NOT NEW.operator) "
               f"AND (OLD.status IN {counted} OR NEW.status IN {counted})")
    return {
        "claims_queue_depth_insert": (
            f"AFTER INSERT ON claims WHEN NEW.status IN {counted} "
            f"BEGIN {_move('NEW', '1', '0', counted)} END"),
        "claims_queue_depth_update": (
            f"AFTER UPDATE OF status, operator ON claims WHEN {changed} "
            f"BEGIN {_move('OLD', '-1', '0', counted)} {_move('NEW', '1', '0', counted)} END"),
        "claims_queue_depth_delete": (
            f"AFTER DELETE ON claims WHEN OLD.status IN {counted} "
            f"BEGIN {_move('OLD', '-1', '0', counted)} END"),
    }


def postgres_function(counted: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION claims_queue_depth_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    here integer := pg_backend_pid() % {SLOTS};
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status COLLATE "C" < OLD.status COLLATE "C" THEN
        {_move('NEW', '1', 'here', counted)}
        {_move('OLD', '-1', 'here', counted)}
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        {_move('OLD', '-1', 'here', counted)}
    END IF;
    IF TG_OP <> 'DELETE' THEN
        {_move('NEW', '1', 'here', counted)}
    END IF;
    RETURN NULL;
END $$
"""


def postgres_triggers(counted: str) -> dict[str, str]:
    return {
        "claims_queue_depth_insert": f"AFTER INSERT ON claims FOR EACH ROW "
                                     f"WHEN (NEW.status IN {counted})",
        "claims_queue_depth_update": (
            "AFTER UPDATE OF status, operator ON claims FOR EACH ROW WHEN ("
            "(OLD.status IS DISTINCT FROM NEW.status OR OLD.operator IS DISTINCT FROM "
            f"NEW.operator) AND (OLD.status IN {counted} OR NEW.status IN {counted}))"),
        "claims_queue_depth_delete": f"AFTER DELETE ON claims FOR EACH ROW "
                                     f"WHEN (OLD.status IN {counted})",
    }


def count_statuses(counted: str) -> None:
    """Make the queue-count triggers (and function) again, counting `counted`."""
    if op.get_bind().dialect.name == "postgresql":
        triggers = postgres_triggers(counted)
        for name in triggers:
            op.execute(f"DROP TRIGGER {name} ON claims")
        op.execute(postgres_function(counted))
        for name, when in triggers.items():
            op.execute(f"CREATE TRIGGER {name} {when} "
                       "EXECUTE FUNCTION claims_queue_depth_follow()")
    else:
        for name, body in sqlite_triggers(counted).items():
            op.execute(f"DROP TRIGGER {name}")
            op.execute(f"CREATE TRIGGER {name} {body}")


def upgrade() -> None:
    op.create_table(
        "handover_batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=False),
        sa.Column("settled", sa.Integer(), nullable=False),
        sa.Column("acks_digest", sa.String(length=64), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_handover_batches_operator", "handover_batches", ["operator"])
    op.create_table(
        "handover_claims",
        sa.Column("batch_id", sa.String(length=40), nullable=False),
        sa.Column("claim_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["handover_batches.id"]),
        sa.ForeignKeyConstraint(["claim_id"], ["claims.id"]),
        sa.PrimaryKeyConstraint("batch_id", "claim_id"),
    )
    op.create_index("ix_handover_claims_claim_id", "handover_claims", ["claim_id"])
    count_statuses(AFTER)


def downgrade() -> None:
    op.execute("UPDATE claims SET status = 'queued' WHERE status = 'exported'")
    count_statuses(BEFORE)
    op.execute("DELETE FROM queue_depth WHERE status = 'exported'")
    op.drop_index("ix_handover_claims_claim_id", table_name="handover_claims")
    op.drop_table("handover_claims")
    op.drop_index("ix_handover_batches_operator", table_name="handover_batches")
    op.drop_table("handover_batches")
