"""queue depth: claims per operator and status, counted by triggers on `claims`

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05

The operators board (GET /v1/operators, the console, `gateway queue list`) and
/metrics counted the queue on every call: a GROUP BY over every queued, pending and
failed claim, 330 to 500 ms with 500,000 claims queued. `queue_depth` holds the counts
instead, moved by triggers on `claims` in the transaction that inserts a claim or
changes its status (or operator), whatever code does it: exact at every commit, for
every instance sharing the database.

Rather than a count cached by each instance and refreshed every few seconds: that
would be stale, differ from one instance to the next (the gauges are aggregated with
`max`), and still count the whole queue every few seconds per instance. Rather than a
bounded index-only count: it still grows with the queue (40-70 ms on PostgreSQL, 460-480
ms on SQLite at 500,000 queued, bench/board_at_scale.py).

Only the three statuses the board shows are counted: a claim settled at once
(pending -> accepted) moves the pending count twice; new, accepted, rejected and
cancelled claims move nothing.

Rows are (operator, status, slot); a count is the sum of its slots. SQLite has one
writer at a time and uses slot 0 alone. On PostgreSQL every transaction that queues,
leases or settles a claim would otherwise update the same row and wait for the one
before it to commit (the row stays locked until then): 16 connections storing queued
claims went from ~3,400 claims/s without the counts to ~600-1,200 with one row
(bench/queue_depth_cost.py). Each connection writes instead to the slot of its server
process (`pg_backend_pid() % 64`), so the instances' connections rarely share one:
~3,000-3,200 claims/s (x0.89-0.94), what remains being the trigger's own work (~20-35
us a claim on the server); a reader sums at most 64 rows per count. Within one change,
the two rows are written in a fixed order (by status), so two transactions moving
claims between the same statuses the opposite way (a lease and a release) wait for
each other rather than deadlock.

What this costs: on SQLite 8-15 us per claim queued (of ~1.2-1.5 ms of CPU in all). On
PostgreSQL, a transaction that moves many claims at once (a replay of thousands)
rewrites its slot's row once per claim, and PostgreSQL cannot prune that row's earlier
versions before the commit: each claim costs more than the one before it, ~8 us extra a
claim in a transaction of 500, ~125 us in one of 20,000. The intake and the drain move
one claim per transaction, a lease batch at most 50, the sweep of expired leases 100.
For the same reason a transaction held open for long (a long `pg_dump`) makes the
counter rows, their triggers and the board slower while it lasts (measured in
docs/operations.md, "How the queue counts stay right").

The triggers are created before the counts are filled: on PostgreSQL CREATE TRIGGER
locks `claims` against writes until this migration commits, so the fill counts every
claim committed before, and the triggers every claim written after.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COUNTED = "('queued', 'pending', 'failed')"
SLOTS = 64  # PostgreSQL: rows per operator and status, one per server process modulo


def _move(row: str, delta: str, slot: str) -> str:
    """Add `delta` to the count of `row`'s (operator, status) in `slot`, creating it."""
    return (f"INSERT INTO queue_depth (operator, status, slot, claims) "
            f"SELECT {row}.operator, {row}.status, {slot}, {delta} "
            f"WHERE {row}.status IN {COUNTED} "
            "ON CONFLICT (operator, status, slot) "
            "DO UPDATE SET claims = queue_depth.claims + excluded.claims;")


# SQLite: one trigger per kind of change, each a statement or two of plain SQL.
_CHANGED = ("(OLD.status IS NOT NEW.status OR OLD.operator IS NOT NEW.operator) "
            f"AND (OLD.status IN {COUNTED} OR NEW.status IN {COUNTED})")
SQLITE_TRIGGERS = {
    "claims_queue_depth_insert": (
        f"AFTER INSERT ON claims WHEN NEW.status IN {COUNTED} "
        f"BEGIN {_move('NEW', '1', '0')} END"),
    "claims_queue_depth_update": (
        f"AFTER UPDATE OF status, operator ON claims WHEN {_CHANGED} "
        f"BEGIN {_move('OLD', '-1', '0')} {_move('NEW', '1', '0')} END"),
    "claims_queue_depth_delete": (
        f"AFTER DELETE ON claims WHEN OLD.status IN {COUNTED} "
        f"BEGIN {_move('OLD', '-1', '0')} END"),
}

POSTGRES_FUNCTION = f"""
CREATE FUNCTION claims_queue_depth_follow() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    here integer := pg_backend_pid() % {SLOTS};
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status COLLATE "C" < OLD.status COLLATE "C" THEN
        {_move('NEW', '1', 'here')}
        {_move('OLD', '-1', 'here')}
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        {_move('OLD', '-1', 'here')}
    END IF;
    IF TG_OP <> 'DELETE' THEN
        {_move('NEW', '1', 'here')}
    END IF;
    RETURN NULL;
END $$
"""
POSTGRES_TRIGGERS = {
    "claims_queue_depth_insert": f"AFTER INSERT ON claims FOR EACH ROW "
                                 f"WHEN (NEW.status IN {COUNTED})",
    "claims_queue_depth_update": (
        "AFTER UPDATE OF status, operator ON claims FOR EACH ROW WHEN ("
        "(OLD.status IS DISTINCT FROM NEW.status OR OLD.operator IS DISTINCT FROM NEW.operator)"
        f" AND (OLD.status IN {COUNTED} OR NEW.status IN {COUNTED}))"),
    "claims_queue_depth_delete": f"AFTER DELETE ON claims FOR EACH ROW "
                                 f"WHEN (OLD.status IN {COUNTED})",
}


def upgrade() -> None:
    op.create_table(
        "queue_depth",
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("claims", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("operator", "status", "slot"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        for name, when in POSTGRES_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {when} "
                       "EXECUTE FUNCTION claims_queue_depth_follow()")
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(
        "INSERT INTO queue_depth (operator, status, slot, claims) "  # noqa: S608 - constants
        "SELECT operator, status, 0, count(*) FROM claims "
        f"WHERE status IN {COUNTED} GROUP BY operator, status")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in POSTGRES_TRIGGERS:
            op.execute(f"DROP TRIGGER {name} ON claims")
        op.execute("DROP FUNCTION claims_queue_depth_follow()")
    else:
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    op.drop_table("queue_depth")
