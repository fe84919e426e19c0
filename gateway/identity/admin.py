"""Account administration, shared by `gateway users ...` and the admin's console page.

Each action is one transaction with its audit entry. Disabling ends the person's
sessions at once; a password reset also ends them and asks for a new password at
the next login; a second-factor reset makes the person enrol again.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.audit.trail import AuditLog
from gateway.identity import sessions, throttle, users
from gateway.identity.credentials import CredentialKeys
from gateway.identity.passwords import hash_password, one_time_password
from gateway.security.apikeys import Principal
from gateway.security.crypto import Cipher
from gateway.storage.models import User, utcnow
from gateway.storage.unit import UnitOfWork


class UnknownUser(LookupError):
    """No account with this id."""


@dataclass(frozen=True, slots=True)
class Accounts:
    """What administering accounts needs, built from settings (CLI) or the app context."""

    credentials: CredentialKeys
    cipher: Cipher
    audit_log: AuditLog
    known_operators: frozenset[str]

    def create(self, session: UnitOfWork, actor: Principal, *, role: str, name: str, email: str,
               finess: str | None = None, operators: list[str] | None = None,
               rpps: str | None = None) -> tuple[User, str]:
        """A new account and its one-time password; an e-mail already used is refused."""
        if users.by_email(session, self.cipher, email) is not None:
            raise users.InvalidUserRequest("--email: an account already uses this address")
        user, password = users.new_user(
            role=role, name=name, email=email, finess=finess, operators=operators, rpps=rpps,
            credentials=self.credentials, cipher=self.cipher,
            known_operators=set(self.known_operators))
        session.add(user)
        session.flush()
        self.audit_log.append(session, actor, "user.create", object_id=user.id, role=user.role,
                              finess=user.finess, operators=user.operators,
                              psc_linked=user.rpps is not None)
        return user, password

    def _get(self, session: UnitOfWork, user_id: str) -> User:
        user = session.get(User, user_id) if users.USER_ID.fullmatch(user_id) else None
        if user is None:
            raise UnknownUser(user_id)
        return user

    def _reseal(self, session: UnitOfWork, user: User) -> None:
        users.seal(user, self.credentials)
        session.add(user)

    def disable(self, session: UnitOfWork, actor: Principal, user_id: str) -> int:
        """Returns how many open sessions were ended."""
        user = self._get(session, user_id)
        if user.disabled_at is None:
            user.disabled_at = utcnow()
            self._reseal(session, user)
        ended = sessions.end_all(session, user.id, self.credentials)
        self.audit_log.append(session, actor, "user.disable", object_id=user.id,
                              sessions_ended=ended)
        return ended

    def reset_password(self, session: UnitOfWork, actor: Principal, user_id: str) -> str:
        user = self._get(session, user_id)
        password = one_time_password()
        user.password_hash, user.password_one_time = hash_password(password), True
        self._reseal(session, user)
        ended = sessions.end_all(session, user.id, self.credentials)
        self.audit_log.append(session, actor, "user.reset_password", object_id=user.id,
                              sessions_ended=ended)
        return password

    def reset_mfa(self, session: UnitOfWork, actor: Principal, user_id: str) -> None:
        user = self._get(session, user_id)
        user.totp_secret_enc, user.totp_enabled, user.recovery_codes = None, False, "[]"
        self._reseal(session, user)
        ended = sessions.end_all(session, user.id, self.credentials)
        self.audit_log.append(session, actor, "user.reset_mfa", object_id=user.id,
                              sessions_ended=ended)

    def unlock(self, session: UnitOfWork, actor: Principal, user_id: str) -> None:
        user = self._get(session, user_id)
        throttle.unlock(session, user.id)
        self.audit_log.append(session, actor, "user.unlock", object_id=user.id)

    def log_out_everywhere(self, session: UnitOfWork, actor: Principal, user_id: str) -> int:
        ended = sessions.end_all(session, user_id, self.credentials)
        self.audit_log.append(session, actor, "console.logout_everywhere", object_id=user_id,
                              sessions_ended=ended)
        return ended
