"""PostgreSQL: each new event row notifies its pharmacy's long-polls, from a trigger

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07

Long-polls on other instances are woken by `pg_notify` on the `gateway_events` channel,
the pharmacy's FINESS as payload (`gateway.events`). The writer sent it itself, one
statement just before each commit: a round trip of its own in every write group that
wrote an event (~0.4 ms of the group's time, in which the next group waits). A trigger
on `events` sends it instead, with the insert that already goes: no statement, and
notifications only for rows that are committed (a rolled-back savepoint discards
its own). PostgreSQL delivers one notification per channel and payload per transaction,
so a group of 16 claims of one pharmacy still wakes it once.

SQLite has no notifications: its instances share Redis for that; nothing changes there.
"""

from __future__ import annotations

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

CHANNEL = "gateway_events"  # gateway.events.notifier.CHANNEL, as this migration knew it

POSTGRES_FUNCTION = f"""
CREATE FUNCTION events_notify_pharmacy() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', NEW.finess);
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(POSTGRES_FUNCTION)
    op.execute("CREATE TRIGGER events_notify_pharmacy AFTER INSERT ON events "
               "FOR EACH ROW EXECUTE FUNCTION events_notify_pharmacy()")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER events_notify_pharmacy ON events")
    op.execute("DROP FUNCTION events_notify_pharmacy()")
