"""`gateway users ...`: people's console accounts from the shell (audited as `cli:<user>`).

`create` and `reset-password` print the one-time password alone on the last line;
the person replaces it at their next login (and enrols a second factor if needed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer

from gateway.audit.trail import AuditLog, cli_actor
from gateway.cli.support import ConfigOption, fail, migrated_settings
from gateway.identity import repository as identity_repository
from gateway.identity import users
from gateway.identity.admin import Accounts, UnknownUser
from gateway.identity.credentials import CredentialKeys
from gateway.security.crypto import Cipher
from gateway.security.keyring import load_credential_key, load_keyring
from gateway.settings import Settings
from gateway.storage.db import Database
from gateway.storage.unit import UnitOfWork

T = TypeVar("T")
users_app = typer.Typer(help="People's console accounts.", no_args_is_help=True)
UserId = Annotated[str, typer.Argument(help="usr_… (see `gateway users list`)")]


def accounts_of(settings: Settings) -> Accounts:
    return Accounts(CredentialKeys(load_credential_key(settings)),
                    Cipher(load_keyring(settings)), AuditLog.from_settings(settings),
                    frozenset(operator.name for operator in settings.operators))


def _run(config: ConfigOption, work: Callable[[Accounts, UnitOfWork], T]) -> T:
    settings = migrated_settings(config)
    accounts = accounts_of(settings)
    db = Database(settings.database_url)
    try:
        return db.write_now(lambda session: work(accounts, session))
    except UnknownUser as exc:
        raise fail(f"no user {exc}") from None
    except users.InvalidUserRequest as exc:
        raise fail(str(exc)) from None
    finally:
        db.engine.dispose()


@users_app.command("create")
def create(
    role: Annotated[str, typer.Option(help="pharmacist, operations or admin")],
    name: Annotated[str, typer.Option(help="the person's name")],
    email: Annotated[str, typer.Option(help="their e-mail: the login")],
    finess: Annotated[str | None, typer.Option(help="a pharmacist's pharmacy")] = None,
    operators: Annotated[str | None, typer.Option(help="operations scope: A,B")] = None,
    rpps: Annotated[str | None, typer.Option(
        help="link their RPPS number: they may also log in with Pro Santé Connect")] = None,
    config: ConfigOption = None,
) -> None:
    """Create an account; its one-time password is printed once, alone on the last line."""
    scope = [op.strip() for op in operators.split(",") if op.strip()] if operators else None
    user, password = _run(config, lambda accounts, session: accounts.create(
        session, cli_actor(), role=role, name=name, email=email, finess=finess,
        operators=scope, rpps=rpps))
    typer.echo(f"user_id: {user.id}")
    typer.echo(password)


@users_app.command("list")
def list_users(config: ConfigOption = None) -> None:
    """One line per account: id, role, FINESS or operators, name, e-mail, state, created."""
    def lines(accounts: Accounts, session: UnitOfWork) -> list[str]:
        out = []
        for user in identity_repository.all_users(session):
            who = users.profile(user, accounts.cipher)
            out.append("\t".join([
                user.id, user.role, user.finess or user.operators or "-", who.name,
                who.email or "-", users.state_of(user),
                user.created_at.isoformat(timespec="seconds")]))
        return out

    for line in _run(config, lines):
        typer.echo(line)


@users_app.command("disable")
def disable(user_id: UserId, config: ConfigOption = None) -> None:
    """Disable an account: its sessions end at once."""
    ended = _run(config, lambda a, s: a.disable(s, cli_actor(), user_id))
    typer.echo(f"disabled {user_id} ({ended} session(s) ended)")


@users_app.command("reset-password")
def reset_password(user_id: UserId, config: ConfigOption = None) -> None:
    """A new one-time password, printed alone on the last line; sessions end."""
    password = _run(config, lambda a, s: a.reset_password(s, cli_actor(), user_id))
    typer.echo(f"user_id: {user_id}")
    typer.echo(password)


@users_app.command("reset-mfa")
def reset_mfa(user_id: UserId, config: ConfigOption = None) -> None:
    """Forget the second factor and recovery codes: the person enrols again."""
    _run(config, lambda a, s: a.reset_mfa(s, cli_actor(), user_id))
    typer.echo(f"second factor reset for {user_id}")


@users_app.command("unlock")
def unlock(user_id: UserId, config: ConfigOption = None) -> None:
    """Unlock an account locked after repeated failed logins."""
    _run(config, lambda a, s: a.unlock(s, cli_actor(), user_id))
    typer.echo(f"unlocked {user_id}")
