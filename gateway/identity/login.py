"""The console's password login: password, then a new password or TOTP enrolment the
first time, then the second factor. Every step counts its attempt before checking it.

Failures on an account are audited one by one (the lock bounds them); failures that
name no account are aggregated per address and window: one entry at the first, one
when the address is throttled. A success is audited with the method and the account.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import anyio

from gateway.context import AppContext
from gateway.errors import GatewayError
from gateway.identity import second_factor, sessions, throttle, users
from gateway.identity.passwords import check_new_password, hash_password, verify_password
from gateway.observability.metrics import CONSOLE_LOGINS
from gateway.security.apikeys import Principal
from gateway.storage.models import ConsoleSession, User
from gateway.storage.unit import UnitOfWork

ANONYMOUS = Principal(key_id="anonymous", role="pharmacy", finess=None, operators=None)
CODE_MAX = 64


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str  # bad_credentials | locked | throttled | bad_code
    retry_after_s: int = 0


@dataclass(frozen=True, slots=True)
class Started:
    token: str
    stage: str


@dataclass(frozen=True, slots=True)
class Enrolled:
    recovery_codes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Places:
    bucket: str
    user_id: str | None
    password_hash: str | None
    first_in_window: bool = False  # the address's first attempt naming no account
    throttled: bool = False
    locked: bool = False
    retry_after_s: int = 0


def address_bucket(ctx: AppContext, address: str) -> str:
    return ctx.cipher.index("login-address", address)


def _take_places(ctx: AppContext, session: UnitOfWork, bucket: str,
                 user: User | None) -> _Places:
    """Both places (address, then account) before anything is checked."""
    limits = ctx.settings.console
    window = throttle.take_address_place(session, bucket, limits.address_window_s)
    if window.failures > limits.address_failures_per_window:
        if not window.reported:
            throttle.mark_reported(session, bucket)
            ctx.audit_log.append(session, ANONYMOUS, "console.login_throttled",
                                 outcome="refused", failures=window.failures,
                                 window_s=limits.address_window_s)
        return _Places(bucket, None, None, throttled=True,
                       retry_after_s=limits.address_window_s)
    usable = (user is not None and user.disabled_at is None
              and users.genuine(user, ctx.credentials))
    if user is None or not usable:
        return _Places(bucket, None, None,
                       first_in_window=throttle.first_unknown(session, bucket))
    if throttle.take_account_place(session, user.id, limits.lock_after_failures) is None:
        return _Places(bucket, user.id, None, locked=True)
    return _Places(bucket, user.id, user.password_hash)


def _failed(ctx: AppContext, session: UnitOfWork, places: _Places, action: str) -> Refused:
    """Record a failure: per account (and lock it at the limit), or aggregated."""
    limits = ctx.settings.console
    if places.user_id is None:
        if places.first_in_window:
            ctx.audit_log.append(session, ANONYMOUS, action, outcome="refused_unknown",
                                 aggregated_per_window_s=limits.address_window_s)
        return Refused("bad_credentials")
    locked = throttle.lock_if_exhausted(session, places.user_id, limits.lock_after_failures)
    ctx.audit_log.append(session, ANONYMOUS, action, object_id=places.user_id,
                         outcome="locked" if locked else "refused")
    return Refused("locked" if locked else "bad_credentials")


def _succeeded(session: UnitOfWork, places: _Places) -> None:
    throttle.give_address_place_back(session, places.bucket)
    if places.user_id is not None:
        throttle.clear_account(session, places.user_id)


class LoginGone(GatewayError):
    """The session or the account vanished between two steps (disabled meanwhile): the
    console sends the browser back to the login page."""

    status, type, title = 303, "login-required", "Please log in again"


def _both(session: UnitOfWork, row: ConsoleSession) -> tuple[User, ConsoleSession]:
    user = session.get(User, row.user_id)
    live = session.get(ConsoleSession, row.token_hash)
    if user is None or live is None or live.ended_at is not None:
        raise LoginGone(row.user_id)
    return user, live


def first_stage(user: User) -> str:
    if user.password_one_time:
        return "password"
    return "second_factor" if user.totp_enabled else "enrol"


async def with_password(ctx: AppContext, *, email: str, password: str,
                        address: str) -> Started | Refused:
    bucket = address_bucket(ctx, address)

    def take(session: UnitOfWork) -> _Places:
        user = users.by_email(session, ctx.cipher, email) if email else None
        return _take_places(ctx, session, bucket, user)

    places = await ctx.db.write(take)
    if places.throttled:
        CONSOLE_LOGINS.labels("password", "throttled").inc()
        return Refused("throttled", places.retry_after_s)
    if places.locked:  # audited once, when it was locked; counted here
        CONSOLE_LOGINS.labels("password", "locked").inc()
        return Refused("locked")
    ok = await anyio.to_thread.run_sync(verify_password, places.password_hash, password)

    def finish(session: UnitOfWork) -> Started | Refused:
        if not ok or places.user_id is None:
            return _failed(ctx, session, places, "console.login")
        user = session.get(User, places.user_id)
        if user is None or user.disabled_at is not None:
            return Refused("bad_credentials")
        _succeeded(session, places)
        stage = first_stage(user)
        token, _ = sessions.open_session(session, user, stage=stage, method="password",
                                         credentials=ctx.credentials)
        ctx.audit_log.append(session, users.principal_of(user), "console.login_password",
                             object_id=user.id, next_step=stage)
        return Started(token, stage)

    outcome = await ctx.db.write(finish)
    CONSOLE_LOGINS.labels("password", "ok" if isinstance(outcome, Started)
                          else outcome.reason).inc()
    return outcome


async def change_password(ctx: AppContext, *, row: ConsoleSession, password: str,
                          confirmation: str) -> str:
    """The one-time password replaced; returns the next stage. Raises WeakPassword."""
    check_new_password(password, confirmation)
    hashed = await anyio.to_thread.run_sync(hash_password, password)

    def store(session: UnitOfWork) -> str:
        user, live = _both(session, row)
        user.password_hash, user.password_one_time = hashed, False
        users.seal(user, ctx.credentials)
        session.add(user)
        stage = "second_factor" if user.totp_enabled else "enrol"
        sessions.advance(session, live, stage, ctx.credentials)
        ctx.audit_log.append(session, users.principal_of(user), "user.password_changed",
                             object_id=user.id)
        return stage

    return await ctx.db.write(store)


async def enrolment_secret(ctx: AppContext, *, row: ConsoleSession) -> tuple[str, str]:
    """The TOTP secret being enrolled (made once, kept sealed) and the account's label."""

    def load(session: UnitOfWork) -> tuple[str, str]:
        user, _ = _both(session, row)
        context = f"totp:{user.id}"
        secret = (ctx.credentials.open(user.totp_secret_enc, context=context)
                  if user.totp_secret_enc else None)
        if secret is None or user.totp_enabled:
            secret = second_factor.new_totp_secret().encode()
            user.totp_secret_enc = ctx.credentials.seal(secret, context=context)
            user.totp_enabled = False
            users.seal(user, ctx.credentials)
            session.add(user)
        return secret.decode(), users.profile(user, ctx.cipher).email

    return await ctx.db.write(load)


async def _second_step(ctx: AppContext, *, row: ConsoleSession, code: str, address: str,
                       enrolling: bool) -> Enrolled | Refused:
    bucket = address_bucket(ctx, address)
    code = code.strip()[:CODE_MAX]

    def take(session: UnitOfWork) -> _Places:
        return _take_places(ctx, session, bucket, session.get(User, row.user_id))

    places = await ctx.db.write(take)
    if places.throttled:
        return Refused("throttled", places.retry_after_s)
    if places.locked or places.user_id is None:
        return Refused("locked")

    def check(session: UnitOfWork) -> Enrolled | Refused:
        user, live = _both(session, row)
        secret = (ctx.credentials.open(user.totp_secret_enc, context=f"totp:{user.id}")
                  if user.totp_secret_enc else None)
        step = (second_factor.accepted_step(secret.decode(), code, user.last_totp_step)
                if secret else None)
        codes: list[str] = []
        action = "console.second_factor"
        if step is not None:
            user.last_totp_step = step
            if enrolling:
                codes = second_factor.new_recovery_codes()
                user.totp_enabled = True
                user.recovery_codes = second_factor.stored_recovery_codes(
                    codes, ctx.credentials)
                action = "user.mfa_enrolled"
        elif not enrolling and (remaining := second_factor.use_recovery_code(
                user.recovery_codes, code, ctx.credentials)) is not None:
            user.recovery_codes = remaining
            action = "console.recovery_code_used"
        else:
            return _failed(ctx, session, places, "console.second_factor")
        users.seal(user, ctx.credentials)
        session.add(user)
        _succeeded(session, places)
        sessions.advance(session, live, sessions.ACTIVE, ctx.credentials)
        left = len(json.loads(user.recovery_codes))
        ctx.audit_log.append(session, users.principal_of(user), action, object_id=user.id,
                             recovery_codes_left=left)
        return Enrolled(codes)

    outcome = await ctx.db.write(check)
    CONSOLE_LOGINS.labels("second_factor", "ok" if isinstance(outcome, Enrolled)
                          else outcome.reason).inc()
    return outcome


async def confirm_enrolment(ctx: AppContext, *, row: ConsoleSession, code: str,
                            address: str) -> Enrolled | Refused:
    return await _second_step(ctx, row=row, code=code, address=address, enrolling=True)


async def second_factor_step(ctx: AppContext, *, row: ConsoleSession, code: str,
                             address: str) -> Enrolled | Refused:
    return await _second_step(ctx, row=row, code=code, address=address, enrolling=False)
