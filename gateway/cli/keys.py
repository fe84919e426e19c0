"""`gateway keys ...`: create, list, revoke API keys, lift suspensions, rotate the data key."""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli.lazy import lazy_group
from gateway.cli.support import ConfigOption, fail, migrated_settings
from gateway.settings import ConfigError

keys_app = typer.Typer(
    help="Create, list, revoke API keys and lift suspensions.", no_args_is_help=True,
    cls=lazy_group({"rotate-data-key": ("gateway.cli.security", "rotate_data_key_command")}))


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
    from gateway.keys.admin import create_key
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
    from gateway.keys.admin import list_key_lines

    for line in list_key_lines(migrated_settings(config)):
        typer.echo(line)


@keys_app.command("revoke")
def keys_revoke(key_id: str, config: ConfigOption = None) -> None:
    """Revoke a key: it stops working at once."""
    from gateway.keys.admin import revoke_key

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
    from gateway.keys.admin import lift_key

    try:
        lifted = lift_key(migrated_settings(config), key_id)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    if lifted is None:
        raise fail(f"no key {key_id}")
    typer.echo(f"lifted {key_id}" if lifted else f"{key_id} was not suspended")
