"""The console's queries: a pharmacy's claims by status, an operator's failed claims, the audit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import union_all
from sqlmodel import col, func, select

from gateway.storage.models import AuditEntry, Claim
from gateway.storage.unit import UnitOfWork

QUEUED = ("queued", "pending", "exported")  # exported: awaiting the operator's batch answer
SETTLED = ("accepted", "rejected", "cancelled")


def claims_of_pharmacy(
    session: UnitOfWork, finess: str, statuses: Sequence[str], *, limit: int, oldest_first: bool,
) -> list[Claim]:
    """The pharmacy's claims in these statuses: oldest queued first, or most recently
    changed first. For the latter each status is read on its own, along the pharmacy's
    status index (`ix_claims_pharmacy_status`), `limit` claims at most, and the lists
    merged: asked for several statuses at once, both databases read every claim of
    them, the pharmacy's whole history, and sort it."""
    if oldest_first:
        return list(session.exec(
            select(Claim).where(col(Claim.finess) == finess, col(Claim.status).in_(statuses))
            .order_by(col(Claim.queued_at), col(Claim.id)).limit(limit)
        ).all())
    newest = union_all(*(
        select(select(Claim.id).where(col(Claim.finess) == finess, col(Claim.status) == status)
               .order_by(col(Claim.updated_at).desc(), col(Claim.id)).limit(limit).subquery())
        for status in statuses))
    return list(session.exec(
        select(Claim).where(col(Claim.id).in_(newest))
        .order_by(col(Claim.updated_at).desc(), col(Claim.id)).limit(limit)
    ).all())


def count_of_pharmacy(session: UnitOfWork, finess: str, statuses: Sequence[str]) -> int:
    return int(session.exec(
        select(func.count()).select_from(Claim)
        .where(col(Claim.finess) == finess, col(Claim.status).in_(statuses))
    ).one())


def failed_of_operator(session: UnitOfWork, operator: str, *, limit: int) -> list[Claim]:
    return list(session.exec(
        select(Claim).where(col(Claim.operator) == operator, col(Claim.status) == "failed")
        .order_by(col(Claim.updated_at).desc(), col(Claim.id)).limit(limit)
    ).all())


def latest_audit(session: UnitOfWork, *, limit: int) -> list[AuditEntry]:
    return list(session.exec(
        select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
    ).all())
