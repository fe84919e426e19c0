"""Lifting a suspension: the same audited transaction for the CLI, the API and the console."""

from __future__ import annotations

from gateway.audit.trail import AuditLog
from gateway.claims.repository import add_event
from gateway.identity.credentials import CredentialKeys
from gateway.rights import repository as rights_repository
from gateway.security import apikeys
from gateway.security.apikeys import Principal
from gateway.storage.models import ApiKey, utcnow
from gateway.storage.unit import UnitOfWork


def lift(session: UnitOfWork, *, key_id: str, actor: Principal, audit_log: AuditLog,
         credentials: CredentialKeys) -> tuple[ApiKey, bool] | None:
    """Lift the key's suspension, audited as `key.lift` by `actor`: the key and whether it
    was suspended, or None for no such key.

    Operations judged the volume legitimate: the key's budgets and its pharmacy's start
    afresh, or its next new person would suspend it again until the period ends."""
    found = apikeys.lift(session, key_id, credentials)
    if found is None:
        audit_log.append(session, actor, "key.lift", object_id=key_id[:64],
                         outcome="unknown_key")
        return None
    row, was_suspended = found
    if was_suspended:
        scopes = [f"key:{row.id}"] + ([f"finess:{row.finess}"] if row.finess else [])
        rights_repository.forget_scopes(session, scopes)
        if row.finess:
            add_event(session, finess=row.finess, type_="key.lifted", claim_id=None,
                      at=utcnow())
    audit_log.append(session, actor, "key.lift", object_id=row.id, finess=row.finess,
                     outcome="ok" if was_suspended else "not_suspended")
    return row, was_suspended
