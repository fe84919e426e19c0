"""Operations: the operators board, pause and resume, replay, the queue listing.

Each action is one transaction that also writes its audit entry. The functions
take a synchronous session so that the API and the CLI share them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlmodel import Session, col, func, select
from ulid import ULID

from gateway.audit.trail import AuditLog
from gateway.claims import repository as claims_repository
from gateway.errors import Conflict, ValidationFailed
from gateway.ops.schemas import ReplayProgress, ReplayRequest
from gateway.queue import repository
from gateway.security.apikeys import Principal
from gateway.storage.models import Claim, Replay, utcnow


class ReplayRunning(Conflict):
    type, title = "replay-running", "A replay of this operator is still running"


def pause(session: Session, *, operator: str, actor: Principal, reason: str,
          audit_log: AuditLog) -> None:
    row = repository.control(session, operator, for_update=True)
    row.paused, row.paused_by, row.pause_reason, row.paused_at = (
        True, actor.key_id, reason or None, utcnow())
    session.add(row)
    audit_log.append(session, actor, "operator.pause", object_id=operator, reason=reason)


def resume(session: Session, *, operator: str, actor: Principal, audit_log: AuditLog) -> None:
    row = repository.control(session, operator, for_update=True)
    was_paused = row.paused
    row.paused, row.paused_by, row.pause_reason, row.paused_at = False, None, None, None
    session.add(row)
    audit_log.append(session, actor, "operator.resume", object_id=operator,
                     was_paused=was_paused)


def _remaining(session: Session, replay_id: str) -> int:
    return int(session.exec(
        select(func.count()).select_from(Claim).where(
            col(Claim.replay_id) == replay_id, col(Claim.status).in_(["queued", "pending"]))
    ).one())


def _finish_if_done(session: Session, replay: Replay) -> int:
    remaining = _remaining(session, replay.id)
    if replay.running and remaining == 0:
        replay.running, replay.finished_at = False, utcnow()
        session.add(replay)
    return remaining


def latest_replay(session: Session, operator: str) -> ReplayProgress | None:
    replay = session.exec(
        select(Replay).where(col(Replay.operator) == operator)
        .order_by(col(Replay.created_at).desc()).limit(1)
    ).first()
    if replay is None:
        return None
    remaining = _finish_if_done(session, replay)
    return ReplayProgress(
        replay_id=replay.id, operator=operator, count=replay.count, remaining=remaining,
        running=replay.running, requested_by=replay.requested_by,
        created_at=replay.created_at, finished_at=replay.finished_at,
    )


def replay(
    session: Session, *, operator: str, actor: Principal, request: ReplayRequest,
    audit_log: AuditLog,
) -> tuple[str | None, int]:
    """Requeue failed (or hurry queued) claims of one operator, one replay at a time."""
    if request.status is None and request.claim_ids is None:
        raise ValidationFailed("say which claims to replay", errors=[
            {"field": "status", "message": "give a status, claim_ids, or both"}])
    running = session.exec(
        select(Replay).where(col(Replay.operator) == operator, col(Replay.running).is_(True))
    ).first()
    if running is not None and _finish_if_done(session, running) > 0:
        raise ReplayRunning(f"replay {running.id} is still running", replay_id=running.id)
    statuses = [request.status] if request.status else ["failed", "queued"]
    query = select(Claim).where(col(Claim.operator) == operator,
                                col(Claim.status).in_(statuses))
    if request.claim_ids is not None:
        query = query.where(col(Claim.id).in_(request.claim_ids))
    claims = list(session.exec(query.order_by(col(Claim.queued_at))).all())
    filter_ = {"status": request.status, "claim_ids": len(request.claim_ids or [])}
    if request.dry_run:
        audit_log.append(session, actor, "operator.replay", object_id=operator,
                         outcome="dry_run", filter=filter_, count=len(claims))
        return None, len(claims)
    replay_id = f"rpl_{ULID()}"
    session.add(Replay(id=replay_id, operator=operator, requested_by=actor.key_id,
                       filter_json=json.dumps(filter_), count=len(claims), created_at=utcnow()))
    _requeue(session, claims, replay_id)
    audit_log.append(session, actor, "operator.replay", object_id=operator, filter=filter_,
                     count=len(claims), replay_id=replay_id)
    return replay_id, len(claims)


def _requeue(session: Session, claims: Iterable[Claim], replay_id: str) -> None:
    now = utcnow()
    for claim in claims:
        if claim.status == "failed":
            claim.attempts = 0
        claim.next_attempt_at = now
        claim.replay_id = replay_id
        claims_repository.record(session, claim, "queued", f"requeued by {replay_id}")
