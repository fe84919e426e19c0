"""People's console accounts: roles, scope, and rows the database alone cannot forge.

A pharmacist is bound to one FINESS, an operations account may be scoped to some
operators, an admin sees everything. The name and e-mail are encrypted (the e-mail
is found by a keyed hash); the row's MAC covers what grants access, so a role,
FINESS, password hash or second factor changed by hand makes the account refuse.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from gateway.domain.identifiers import check_finess, check_rpps
from gateway.identity import repository
from gateway.identity.credentials import CredentialKeys, tampered
from gateway.identity.passwords import hash_password, one_time_password
from gateway.security.apikeys import Principal, Role
from gateway.security.crypto import Cipher
from gateway.storage.models import User, utcnow
from gateway.storage.unit import UnitOfWork

UserRole = Literal["pharmacist", "operations", "admin"]
USER_ROLES: tuple[UserRole, ...] = ("pharmacist", "operations", "admin")
PRINCIPAL_ROLE: dict[str, Role] = {"pharmacist": "pharmacy", "operations": "operations",
                                   "admin": "admin"}
USER_ID = re.compile(r"usr_[0-9a-f]{16}")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}$")


class InvalidUserRequest(ValueError):
    """An account cannot be created or changed as asked; the message names the option."""


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    email: str


def new_id() -> str:
    return "usr_" + secrets.token_hex(8)


def mac_fields(user: User) -> dict[str, Any]:
    return {"id": user.id, "role": user.role, "finess": user.finess,
            "operators": user.operators, "rpps": user.rpps, "email_index": user.email_index,
            "password_hash": user.password_hash, "password_one_time": user.password_one_time,
            "totp_secret_enc": user.totp_secret_enc, "totp_enabled": user.totp_enabled,
            "recovery_codes": user.recovery_codes, "disabled_at": user.disabled_at}


def seal(user: User, credentials: CredentialKeys) -> None:
    user.row_mac = credentials.mac("user", mac_fields(user))


def genuine(user: User, credentials: CredentialKeys) -> bool:
    """As the gateway wrote it; a row altered or inserted by hand is counted and refused."""
    if credentials.mac_ok("user", mac_fields(user), user.row_mac):
        return True
    tampered("user", user.id)
    return False


def principal_of(user: User) -> Principal:
    operators = frozenset(user.operators.split(",")) if user.operators else None
    return Principal(key_id=user.id, role=PRINCIPAL_ROLE[user.role], finess=user.finess,
                     operators=operators)


def email_index(cipher: Cipher, email: str) -> str:
    return cipher.index("user-email", email.strip().lower())


def profile(user: User, cipher: Cipher) -> Profile:
    data = cipher.decrypt_json(user.profile_enc, context=f"user:{user.id}")
    return Profile(name=data["name"], email=data["email"])


def _scope(role: str, finess: str | None, operators: list[str] | None,
           known_operators: set[str]) -> tuple[str | None, str | None]:
    if role not in USER_ROLES:
        raise InvalidUserRequest(f"--role must be one of {', '.join(USER_ROLES)}")
    if role == "pharmacist":
        if not finess or operators:
            raise InvalidUserRequest("a pharmacist needs --finess (and no --operators)")
        try:
            return check_finess(finess), None
        except ValueError as exc:
            raise InvalidUserRequest(f"--finess: {exc}") from exc
    if finess:
        raise InvalidUserRequest("only a pharmacist is bound to a FINESS")
    if operators and role != "operations":
        raise InvalidUserRequest("only an operations account is scoped to operators")
    unknown = sorted(set(operators or []) - known_operators)
    if unknown:
        raise InvalidUserRequest(f"--operators: unknown operator(s) {', '.join(unknown)}")
    return None, ",".join(sorted(set(operators))) if operators else None


def new_user(
    *, role: str, name: str, email: str, credentials: CredentialKeys, cipher: Cipher,
    known_operators: set[str], finess: str | None = None,
    operators: list[str] | None = None, rpps: str | None = None,
) -> tuple[User, str]:
    """A new account and its one-time password (to be replaced at the first login)."""
    finess, scope = _scope(role, finess, operators, known_operators)
    name, email = name.strip(), email.strip()
    if not name or len(name) > 200:
        raise InvalidUserRequest("--name: required, at most 200 characters")
    if not EMAIL.match(email):
        raise InvalidUserRequest("--email: not an e-mail address")
    if rpps is not None:
        try:
            rpps = check_rpps(rpps)
        except ValueError as exc:
            raise InvalidUserRequest(f"--rpps: {exc}") from exc
    user_id = new_id()
    password = one_time_password()
    user = User(
        id=user_id, role=role, finess=finess, operators=scope, rpps=rpps,
        email_index=email_index(cipher, email),
        profile_enc=cipher.encrypt_json({"name": name, "email": email},
                                        context=f"user:{user_id}"),
        password_hash=hash_password(password), password_one_time=True,
        created_at=utcnow(),
    )
    seal(user, credentials)
    return user, password


def by_email(session: UnitOfWork, cipher: Cipher, email: str) -> User | None:
    return repository.user_by_email_index(session, email_index(cipher, email))


def state_of(user: User) -> str:
    """One word for lists: disabled, locked, enrolling (no second factor yet) or active."""
    if user.disabled_at is not None:
        return "disabled"
    if user.locked_at is not None:
        return "locked"
    if user.password_hash is not None and not user.totp_enabled:
        return "enrolling"
    return "active"
