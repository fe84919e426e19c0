"""`gateway ...`: the command line of CONTRACT.md section 1.

Exit status: 0 success, 2 bad usage (typer's own), 1 failure with a reason on stderr.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Annotated

import typer

from gateway.audit_cli import audit_app
from gateway.cli_support import ConfigOption, fail, migrated_settings
from gateway.identity.psc_simulator import psc_simulator_command
from gateway.queue_cli import queue_app
from gateway.receipts.verify_cli import receipt_app
from gateway.security_cli import purge_command, rotate_data_key_command
from gateway.settings import ConfigError
from gateway.users_cli import users_app

app = typer.Typer(help="Tiers-payant fallback claims gateway.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
keys_app = typer.Typer(help="Create, list, revoke API keys and lift suspensions.",
                       no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(queue_app, name="queue")
app.add_typer(receipt_app, name="receipt")
app.add_typer(audit_app, name="audit")
app.add_typer(users_app, name="users")
app.command("psc-simulator")(psc_simulator_command)
app.command("purge")(purge_command)
keys_app.command("rotate-data-key")(rotate_data_key_command)

DEVELOPMENT_WARNING = """\
*** DEVELOPMENT MODE ***  missing keys are generated and kept under {data_dir}/ next to
the database: anyone who can read that folder reads everything. Never serve real
patients' data like this: set environment = "production" and give every key."""


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
) -> None:
    """Start the gateway alone, configured by a TOML file."""
    import uvicorn

    from gateway.claims.service import LEASE_GRACE_S
    from gateway.main import create_app, settle_heap
    from gateway.serving import GracefulServer

    settings = migrated_settings(config)
    if settings.is_development:
        typer.echo(DEVELOPMENT_WARNING.format(data_dir=settings.data_dir), err=True)
    try:
        application = create_app(settings)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None
    settle_heap()
    # X-Forwarded-* are believed only from `trusted_proxies` (TrustedProxyMiddleware)
    # log_config=None: uvicorn keeps the gateway's logging, whose filter masks personal data
    # requests still running when the listener closes get until the longest operator
    # deadline plus the lease grace; then they are cancelled and their claims queued
    longest = max((op.deadline_s for op in settings.operators), default=0.0)
    server = GracefulServer(uvicorn.Config(
        application, host=host, port=port, log_level="warning", proxy_headers=False,
        log_config=None, timeout_graceful_shutdown=math.ceil(longest + LEASE_GRACE_S),
    ), application.state.stop_signal, settings.shutdown_delay_s)
    server.run()


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="the gateway's port")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="where the demo keeps its files")] = Path("var"),
) -> None:
    """The gateway on SQLite with two simulated operators, keys and a curl to paste."""
    from gateway.demo import run_demo

    try:
        asyncio.run(run_demo(port=port, data_dir=data_dir))
    except KeyboardInterrupt:
        pass
    except (ConfigError, OSError) as exc:
        raise fail(str(exc)) from None


@app.command()
def simulator(
    port: Annotated[int, typer.Option(help="port to listen on")],
    name: Annotated[str, typer.Option(help="the operator's name")] = "simulator",
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
) -> None:
    """One simulated operator speaking the reference protocol, with fault injection."""
    import uvicorn

    from adapters.simulator import create_simulator

    uvicorn.run(create_simulator(name), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=1)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply the database migrations."""
    migrated_settings(config)
    typer.echo("database is up to date")


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="pharmacy, operations or admin")],
    finess: Annotated[str | None, typer.Option(help="the pharmacy's FINESS")] = None,
    operators: Annotated[str | None, typer.Option(help="operations scope: A,B")] = None,
    label: Annotated[str | None, typer.Option(help="a note to recognise the key")] = None,
    expires_days: Annotated[int | None, typer.Option(
        "--expires-days", min=1, help="the key stops working after N days")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key; its secret is printed once, alone on the last line."""
    from gateway.keys_admin import create_key
    from gateway.security.apikeys import InvalidKeyRequest

    settings = migrated_settings(config)
    scope = [op.strip() for op in operators.split(",") if op.strip()] if operators else None
    unknown = sorted(set(scope or []) - {op.name for op in settings.operators})
    if unknown:
        raise fail(f"--operators: unknown operator(s) {', '.join(unknown)}")
    try:
        key_id, secret = create_key(
            settings, role=role, finess=finess, operators=scope, label=label,
            expires_days=expires_days,
        )
    except (InvalidKeyRequest, ConfigError) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"key_id: {key_id}")
    typer.echo(secret)


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """One line per key: id, role, FINESS or operators, label, created, revoked,
    suspended since, suspension reason."""
    from gateway.keys_admin import list_key_lines

    for line in list_key_lines(migrated_settings(config)):
        typer.echo(line)


@keys_app.command("revoke")
def keys_revoke(key_id: str, config: ConfigOption = None) -> None:
    """Revoke a key: it stops working at once."""
    from gateway.keys_admin import revoke_key

    try:
        found = revoke_key(migrated_settings(config), key_id)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if not found:
        raise fail(f"no key {key_id}")
    typer.echo(f"revoked {key_id}")


@keys_app.command("lift")
def keys_lift(key_id: str, config: ConfigOption = None) -> None:
    """Lift a key's suspension (over a rights budget): it works again, its budgets afresh."""
    from gateway.keys_admin import lift_key

    try:
        lifted = lift_key(migrated_settings(config), key_id)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if lifted is None:
        raise fail(f"no key {key_id}")
    typer.echo(f"lifted {key_id}" if lifted else f"{key_id} was not suspended")


def main() -> None:
    app()
