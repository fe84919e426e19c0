"""Every query about people: accounts, their console sessions, the pharmacies served."""

from __future__ import annotations

from sqlalchemy import select as core_select
from sqlmodel import col, select

from gateway.storage.models import ApiKey, ConsoleSession, User
from gateway.storage.unit import UnitOfWork


def user_by_email_index(session: UnitOfWork, index: str) -> User | None:
    """The account whose e-mail has this keyed hash (e-mails are stored encrypted)."""
    return session.exec(select(User).where(col(User.email_index) == index)).first()


def users_by_rpps(session: UnitOfWork, rpps: str) -> list[User]:
    return list(session.exec(select(User).where(col(User.rpps) == rpps)).all())


def all_users(session: UnitOfWork) -> list[User]:
    return list(session.exec(select(User).order_by(col(User.created_at))).all())


def open_sessions_of(session: UnitOfWork, user_id: str) -> list[ConsoleSession]:
    return list(session.exec(select(ConsoleSession).where(
        col(ConsoleSession.user_id) == user_id, col(ConsoleSession.ended_at).is_(None))).all())


def served_pharmacies(session: UnitOfWork) -> set[str]:
    """FINESS of the pharmacies this gateway serves: with a live key or an account."""
    keys = session.execute(core_select(col(ApiKey.finess)).where(
        col(ApiKey.finess).is_not(None), col(ApiKey.revoked_at).is_(None))).scalars()
    people = session.execute(core_select(col(User.finess)).where(
        col(User.finess).is_not(None))).scalars()
    return {finess for finess in (*keys, *people) if finess is not None}
