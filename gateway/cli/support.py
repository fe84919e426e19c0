"""What every command shares: the --config option, failing with a reason, migrated settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.settings import ConfigError, Settings, load_settings

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML file (default config/gateway.toml; env GATEWAY_CONFIG)"),
]


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def settings_or_exit(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None


def migrated_settings(config: Path | None) -> Settings:
    """Settings with the database brought up to date: every DB command starts so."""
    from gateway.identity.credentials import CredentialKeys
    from gateway.security.keyring import load_credential_key, load_keyring
    from gateway.storage.migrate import upgrade

    settings = settings_or_exit(config)
    try:
        load_keyring(settings)  # every key, in the order the gateway's start names them
        credentials = CredentialKeys(load_credential_key(settings))
    except ConfigError as exc:
        raise fail(f"configuration: {exc}") from None
    try:
        upgrade(settings.database_url, credentials)
    except Exception as exc:  # noqa: BLE001 - report any database failure as exit 1
        raise fail(f"database: {type(exc).__name__}: {exc}") from None
    return settings


