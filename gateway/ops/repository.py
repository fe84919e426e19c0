"""Every query of the operations verbs: operator controls, replays and what they requeue."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, func, select

from gateway.storage.models import Claim, OperatorControl, Replay
from gateway.storage.unit import UnitOfWork


def controls(session: UnitOfWork) -> dict[str, OperatorControl]:
    """Each operator's control row (operators never paused have none yet)."""
    return {row.operator: row for row in session.exec(select(OperatorControl)).all()}


def paused_operators(session: UnitOfWork) -> set[str]:
    return set(session.exec(
        select(OperatorControl.operator).where(col(OperatorControl.paused).is_(True))).all())


def latest_replay(session: UnitOfWork, operator: str) -> Replay | None:
    return session.exec(
        select(Replay).where(col(Replay.operator) == operator)
        .order_by(col(Replay.created_at).desc()).limit(1)
    ).first()


def running_replay(session: UnitOfWork, operator: str) -> Replay | None:
    return session.exec(
        select(Replay).where(col(Replay.operator) == operator, col(Replay.running).is_(True))
    ).first()


def unsettled_of_replay(session: UnitOfWork, replay_id: str) -> int:
    """Claims of this replay still queued or being sent."""
    return int(session.exec(
        select(func.count()).select_from(Claim).where(
            col(Claim.replay_id) == replay_id, col(Claim.status).in_(["queued", "pending"]))
    ).one())


def replayable(session: UnitOfWork, operator: str, statuses: Sequence[str],
               claim_ids: Sequence[str] | None) -> list[Claim]:
    """The operator's claims in these statuses (among `claim_ids` when given), oldest first."""
    query = select(Claim).where(col(Claim.operator) == operator, col(Claim.status).in_(statuses))
    if claim_ids is not None:
        query = query.where(col(Claim.id).in_(claim_ids))
    return list(session.exec(query.order_by(col(Claim.queued_at))).all())
