"""Is the caller still allowed, as of this transaction: a key, or a person's account."""

from __future__ import annotations

from typing import Any

from gateway.identity import users
from gateway.identity.credentials import CredentialKeys
from gateway.keys.repository import KEY_NOT_READ
from gateway.security import apikeys
from gateway.security.apikeys import Principal
from gateway.storage.models import User
from gateway.storage.unit import UnitOfWork


def is_api_key(principal: Principal) -> bool:
    """An API key (else a person's console account)."""
    return not users.USER_ID.fullmatch(principal.key_id)


def is_live(session: UnitOfWork, principal: Principal, credentials: CredentialKeys, *,
            key_row: Any = KEY_NOT_READ) -> bool:
    """Neither revoked, expired, disabled nor altered by hand. `key_row`: an API key's
    columns (`gateway.keys.repository.KEY_ROW_COLUMNS`, or None for no such key) when the
    caller read them in this transaction with a statement of its own."""
    if not is_api_key(principal):
        user = session.get(User, principal.key_id)
        return (user is not None and user.disabled_at is None
                and users.genuine(user, credentials))
    if key_row is KEY_NOT_READ:
        return apikeys.is_live(session, principal.key_id, credentials)
    return apikeys.row_is_live(key_row, credentials)
