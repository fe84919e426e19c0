"""Is the caller still allowed, as of this transaction: a key, or a person's account."""

from __future__ import annotations

from gateway.identity import users
from gateway.identity.credentials import CredentialKeys
from gateway.security import apikeys
from gateway.security.apikeys import Principal
from gateway.storage.models import User
from gateway.storage.unit import UnitOfWork


def is_live(session: UnitOfWork, principal: Principal, credentials: CredentialKeys) -> bool:
    """Neither revoked, expired, disabled nor altered by hand."""
    if users.USER_ID.fullmatch(principal.key_id):
        user = session.get(User, principal.key_id)
        return (user is not None and user.disabled_at is None
                and users.genuine(user, credentials))
    return apikeys.is_live(session, principal.key_id, credentials)
