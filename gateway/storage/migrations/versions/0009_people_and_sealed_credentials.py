"""console accounts for people, sealed credentials, shared login throttle

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

API keys stop opening the console: people log in with their own accounts (`users`),
through Pro Santé Connect or a password and a second factor. Sessions now belong to
a person and carry their login stage; the sessions opened with keys are dropped.
Every stored credential is peppered and every key, user and session row sealed
(`gateway.identity.credentials`): the stored SHA-256 of each existing key is wrapped
under the pepper here, without the secret, so existing keys keep working. That
needs the credential key, which `gateway.storage.migrate.upgrade` hands over from the
settings; a database that holds keys cannot be upgraded without it.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic import context, op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _instant(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _seal_existing_keys() -> None:
    from gateway.security.apikeys import mac_fields

    connection = op.get_bind()
    keys = sa.table("api_keys", sa.column("id"), sa.column("secret_hash"), sa.column("role"),
                    sa.column("finess"), sa.column("operators"),
                    sa.column("expires_at", sa.DateTime(timezone=True)),
                    sa.column("revoked_at", sa.DateTime(timezone=True)), sa.column("row_mac"))
    rows = connection.execute(sa.select(keys)).mappings().all()
    if not rows:
        return
    credentials = context.config.attributes.get("credentials")
    if credentials is None:
        raise RuntimeError(
            "migration 0009 wraps the stored API key digests under security.credential_key: "
            "run it with the gateway's configuration (`gateway db upgrade --config FILE`)")
    from types import SimpleNamespace

    from gateway.storage.models import UTCDateTime

    aware = UTCDateTime()
    for row in rows:
        values = dict(row)
        for name in ("expires_at", "revoked_at"):
            values[name] = aware.process_result_value(values[name], connection.dialect)
        values["secret_hash"] = credentials.wrap(row["secret_hash"])
        mac = credentials.mac("api_key", mac_fields(SimpleNamespace(**values)))
        connection.execute(keys.update().where(keys.c.id == row["id"]).values(
            secret_hash=values["secret_hash"], row_mac=mac))


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("finess", sa.String(length=9), nullable=True),
        sa.Column("operators", sa.String(length=500), nullable=True),
        sa.Column("rpps", sa.String(length=11), nullable=True),
        sa.Column("email_index", sa.String(length=64), nullable=False),
        sa.Column("profile_enc", sa.LargeBinary(), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("password_one_time", sa.Boolean(), nullable=False),
        sa.Column("totp_secret_enc", sa.LargeBinary(), nullable=True),
        sa.Column("totp_enabled", sa.Boolean(), nullable=False),
        sa.Column("recovery_codes", sa.String(length=2000), nullable=False),
        _instant("created_at"),
        _instant("disabled_at", nullable=True),
        sa.Column("row_mac", sa.String(length=64), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        _instant("locked_at", nullable=True),
        sa.Column("last_totp_step", sa.BigInteger(), nullable=False),
        _instant("last_login_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email_index"),
    )
    op.create_index("ix_users_finess", "users", ["finess"])
    op.create_index("ix_users_rpps", "users", ["rpps"])

    op.drop_index("ix_console_sessions_key_id", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        _instant("created_at"),
        _instant("last_seen_at"),
        _instant("ended_at", nullable=True),
        sa.Column("row_mac", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_console_sessions_user_id", "console_sessions", ["user_id"])

    op.create_table(
        "login_throttle",
        sa.Column("bucket", sa.String(length=64), nullable=False),
        _instant("window_started_at"),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("unknown_failures", sa.Integer(), nullable=False),
        sa.Column("reported", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("bucket"),
    )

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("row_mac", sa.String(length=64), nullable=False, server_default=""))
    _seal_existing_keys()


def downgrade() -> None:
    """The schema only: wrapped key digests cannot be unwrapped, so keys must be re-issued."""
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_column("row_mac")
    op.drop_table("login_throttle")
    op.drop_index("ix_console_sessions_user_id", table_name="console_sessions")
    op.drop_table("console_sessions")
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        _instant("created_at"),
        _instant("last_seen_at"),
        _instant("ended_at", nullable=True),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_console_sessions_key_id", "console_sessions", ["key_id"])
    op.drop_index("ix_users_rpps", table_name="users")
    op.drop_index("ix_users_finess", table_name="users")
    op.drop_table("users")
