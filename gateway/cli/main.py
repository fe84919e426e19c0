"""`gateway ...`: the command line (`gateway --help`; README and docs/operations.md).

Exit status: 0 success, 2 bad usage (typer's own), 1 failure with a reason on stderr.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.lazy import lazy_group
from gateway.cli.support import ConfigOption, fail, migrated_settings, settings_or_exit
from gateway.settings import ConfigError

# Imported when run (gateway.cli.lazy): a command pays for its own imports only.
LAZY_COMMANDS = {
    "keys": ("gateway.cli.keys", "keys_app"),
    "queue": ("gateway.cli.queue", "queue_app"),
    "receipt": ("gateway.cli.receipts", "receipt_app"),
    "audit": ("gateway.cli.audit", "audit_app"),
    "users": ("gateway.cli.users", "users_app"),
    "psc-simulator": ("gateway.identity.psc_simulator", "psc_simulator_command"),
    "purge": ("gateway.cli.security", "purge_command"),
}
app = typer.Typer(help="Tiers-payant fallback claims gateway.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=lazy_group(LAZY_COMMANDS))
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

DEVELOPMENT_WARNING = """\
*** DEVELOPMENT MODE ***  missing keys are generated and kept under {data_dir}/ next to
the database: anyone who can read that folder reads everything. Never serve real
patients' data like this: set environment = "production" and give every key."""


SQLITE_WORKERS = """\
--workers {workers} needs PostgreSQL. On SQLite the gateway is one process: it groups the
writes of all its requests into shared commits through SQLite's single writer, whose lock
several processes would instead wait for in turn (no gain measured), and a long-poll
would not hear of another process's claims. Serve with --workers 1, or set database_url
to PostgreSQL (docs/operations.md, "Several workers")."""


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(
        min=1, help="processes serving the port, each an instance (PostgreSQL only)")] = 1,
) -> None:
    """Start the gateway alone, configured by a TOML file."""
    from gateway.main import create_app, settle_heap
    from gateway.storage.db import is_sqlite
    from gateway.web.workers import Serving, graceful_server, run_workers

    if workers > 1 and is_sqlite(settings_or_exit(config).database_url):
        raise fail(SQLITE_WORKERS.format(workers=workers))  # before migrating anything
    settings = migrated_settings(config)
    if settings.is_development:
        typer.echo(DEVELOPMENT_WARNING.format(data_dir=settings.data_dir), err=True)
    try:
        # with workers, each builds its own: this one only checks the keys and settings
        application = create_app(settings)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None
    serving = Serving(settings, host, port)
    if workers > 1:
        del application
        if not run_workers(serving, workers):
            raise fail("a worker process could not start: see its log above")
        return
    settle_heap()
    graceful_server(application, serving).run()


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="the gateway's port")] = 8000,
    data_dir: Annotated[Path, typer.Option(help="where the demo keeps its files")] = Path("var"),
) -> None:
    """The gateway on SQLite with two simulated operators, keys and a curl to paste."""
    from gateway.demo.run import run_demo

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
    batch_keys: Annotated[Path | None, typer.Option(
        help="JSON file: decryption_key and signing_key (private JWKs), gateway_jwks (the "
             "gateway's JWKS URL); then POST /_batches answers hand-over batches")] = None,
) -> None:
    """One simulated operator speaking the reference protocol, with fault injection."""
    import json

    import uvicorn

    from adapters.simulator import create_simulator
    from adapters.simulator_batches import BatchKeys

    simulator = create_simulator(name)
    if batch_keys is not None:
        try:
            simulator.state.batch_keys = BatchKeys(**json.loads(batch_keys.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise fail(f"{batch_keys}: {type(exc).__name__}") from None
    uvicorn.run(simulator, host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=1)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply the database migrations."""
    migrated_settings(config)
    typer.echo("database is up to date")


def main() -> None:
    app()
