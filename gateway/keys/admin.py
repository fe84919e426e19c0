"""Key administration for the CLI and the demo: one short, audited transaction each."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from gateway.audit.trail import AuditLog, cli_actor
from gateway.identity.credentials import CredentialKeys
from gateway.keys import repository as keys_repository
from gateway.keys import service as keys_service
from gateway.security import apikeys
from gateway.security.keyring import load_credential_key
from gateway.settings import Settings
from gateway.storage.db import Database
from gateway.storage.models import utcnow
from gateway.storage.unit import UnitOfWork

T = TypeVar("T")


def _once(settings: Settings, work: Callable[[UnitOfWork], T]) -> T:
    db = Database(settings.database_url)
    try:
        return db.write_now(work)
    finally:
        db.engine.dispose()


def create_key(
    settings: Settings, *, role: str, finess: str | None = None,
    operators: list[str] | None = None, label: str | None = None,
    expires_days: int | None = None,
) -> tuple[str, str]:
    """A new key, stored hashed and audited as `key.create` by `cli:<user>`."""
    if expires_days is not None and expires_days < 1:
        raise apikeys.InvalidKeyRequest("--expires-days must be at least 1")
    expires_at = utcnow() + timedelta(days=expires_days) if expires_days else None
    credentials = CredentialKeys(load_credential_key(settings))
    row, secret = apikeys.new_key(role=role, finess=finess, operators=operators, label=label,
                                  expires_at=expires_at, credentials=credentials)
    audit_log = AuditLog.from_settings(settings)

    def store(session: UnitOfWork) -> None:
        session.add(row)
        audit_log.append(session, cli_actor(), "key.create", object_id=row.id, role=row.role,
                         finess=row.finess, operators=row.operators,
                         expires_at=expires_at.isoformat() if expires_at else None)

    _once(settings, store)
    return row.id, secret


def list_key_lines(settings: Settings) -> list[str]:
    """id, role, scope, label, created, revoked, suspended since, suspension reason."""
    rows = _once(settings, keys_repository.all_keys)
    return [
        "\t".join([
            row.id, row.role, row.finess or row.operators or "-", row.label or "-",
            row.created_at.isoformat(timespec="seconds"),
            row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else "-",
            row.suspended_at.isoformat(timespec="seconds") if row.suspended_at else "-",
            row.suspension_reason or "-",
        ])
        for row in rows
    ]


def revoke_key(settings: Settings, key_id: str) -> bool:
    """Revoke at once (every instance checks the database); audited as `key.revoke`."""
    audit_log = AuditLog.from_settings(settings)
    credentials = CredentialKeys(load_credential_key(settings))

    def revoke(session: UnitOfWork) -> bool:
        found = apikeys.revoke(session, key_id, credentials)
        audit_log.append(session, cli_actor(), "key.revoke", object_id=key_id[:64],
                         outcome="ok" if found else "unknown_key")
        return found

    return _once(settings, revoke)


def lift_key(settings: Settings, key_id: str) -> bool | None:
    """Lift a suspension, audited as `key.lift` by `cli:<user>`: True lifted, False it was
    not suspended, None no such key."""
    audit_log = AuditLog.from_settings(settings)
    credentials = CredentialKeys(load_credential_key(settings))

    def lift(session: UnitOfWork) -> bool | None:
        found = keys_service.lift(session, key_id=key_id, actor=cli_actor(),
                                  audit_log=audit_log, credentials=credentials)
        return None if found is None else found[1]

    return _once(settings, lift)
