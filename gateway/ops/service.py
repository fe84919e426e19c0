"""Operations: pause and resume an operator, replay its claims, follow a replay.

The API, the console and the command line share these verbs through `Operations`,
which owns each verb's transaction (the action and its audit entry, together) and then
wakes the operator's drain when this process runs one. The command line has none: the
drains of the running gateways find the requeued claims at their next step.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.audit.trail import AuditLog
from gateway.claims import repository as claims_repository
from gateway.errors import Conflict, ValidationFailed
from gateway.ops import repository
from gateway.ops.schemas import ReplayProgress, ReplayRequest
from gateway.queue import repository as queue_repository
from gateway.security.apikeys import Principal
from gateway.storage.db import Database
from gateway.storage.ids import new_ulid
from gateway.storage.models import Claim, Replay, utcnow
from gateway.storage.unit import UnitOfWork

if TYPE_CHECKING:
    from gateway.context import AppContext


class ReplayRunning(Conflict):
    type, title = "replay-running", "A replay of this operator is still running"


def _nobody_to_wake(operator: str) -> None:
    """The command line runs no drain."""


@dataclass(frozen=True, slots=True)
class Operations:
    """The operations verbs over one database and audit trail."""

    db: Database
    audit_log: AuditLog
    wake: Callable[[str], None] = _nobody_to_wake  # the operator's drain, if any here

    @classmethod
    def of(cls, ctx: AppContext) -> Operations:
        def wake(operator: str) -> None:
            worker = ctx.drains.get(operator)
            if worker is not None:
                worker.wake.set()
        return cls(ctx.db, ctx.audit_log, wake)

    async def pause(self, operator: str, *, actor: Principal, reason: str) -> None:
        """Send nothing to `operator` until resumed: new claims are queued (survives
        restarts: the control row is in the database)."""
        await self.db.write(lambda s: _pause(s, operator, actor, reason, self.audit_log))

    async def resume(self, operator: str, *, actor: Principal) -> None:
        await self.db.write(lambda s: _resume(s, operator, actor, self.audit_log))
        self.wake(operator)

    async def replay(self, operator: str, *, actor: Principal,
                     request: ReplayRequest) -> tuple[str | None, int]:
        """Requeue failed (or hurry queued) claims of `operator`, one replay at a time:
        (the replay's id, or None for a dry run; how many claims)."""
        replay_id, count = await self.db.write(
            lambda s: _replay(s, operator, actor, request, self.audit_log))
        if not request.dry_run:
            self.wake(operator)
        return replay_id, count

    async def latest_replay(self, operator: str) -> ReplayProgress | None:
        """The latest replay's progress (marked finished once nothing of it is left)."""
        return await self.db.write(lambda s: _latest_replay(s, operator))

    async def queue(self, operator: str, *, limit: int, after_id: str | None) -> list[Claim]:
        """The operator's queued, pending and failed claims, oldest first."""
        return await self.db.read(lambda s: queue_repository.queue_of(
            s, operator, limit=limit, after_id=after_id))


def _pause(session: UnitOfWork, operator: str, actor: Principal, reason: str,
           audit_log: AuditLog) -> None:
    row = queue_repository.control(session, operator, for_update=True)
    row.paused, row.paused_by, row.pause_reason, row.paused_at = (
        True, actor.key_id, reason or None, utcnow())
    session.add(row)
    audit_log.append(session, actor, "operator.pause", object_id=operator, reason=reason)


def _resume(session: UnitOfWork, operator: str, actor: Principal, audit_log: AuditLog) -> None:
    row = queue_repository.control(session, operator, for_update=True)
    was_paused = row.paused
    row.paused, row.paused_by, row.pause_reason, row.paused_at = False, None, None, None
    session.add(row)
    audit_log.append(session, actor, "operator.resume", object_id=operator,
                     was_paused=was_paused)


def _finish_if_done(session: UnitOfWork, replay: Replay) -> int:
    remaining = repository.unsettled_of_replay(session, replay.id)
    if replay.running and remaining == 0:
        replay.running, replay.finished_at = False, utcnow()
        session.add(replay)
    return remaining


def _latest_replay(session: UnitOfWork, operator: str) -> ReplayProgress | None:
    replay = repository.latest_replay(session, operator)
    if replay is None:
        return None
    remaining = _finish_if_done(session, replay)
    return ReplayProgress(
        replay_id=replay.id, operator=operator, count=replay.count, remaining=remaining,
        running=replay.running, requested_by=replay.requested_by,
        created_at=replay.created_at, finished_at=replay.finished_at,
    )


def _replay(session: UnitOfWork, operator: str, actor: Principal, request: ReplayRequest,
            audit_log: AuditLog) -> tuple[str | None, int]:
    if request.status is None and request.claim_ids is None:
        raise ValidationFailed("say which claims to replay", errors=[
            {"field": "status", "message": "give a status, claim_ids, or both"}])
    running = repository.running_replay(session, operator)
    if running is not None and _finish_if_done(session, running) > 0:
        raise ReplayRunning(f"replay {running.id} is still running", replay_id=running.id)
    statuses = [request.status] if request.status else ["failed", "queued"]
    claims = repository.replayable(session, operator, statuses, request.claim_ids)
    filter_ = {"status": request.status, "claim_ids": len(request.claim_ids or [])}
    if request.dry_run:
        audit_log.append(session, actor, "operator.replay", object_id=operator,
                         outcome="dry_run", filter=filter_, count=len(claims))
        return None, len(claims)
    replay_id = f"rpl_{new_ulid()}"
    session.add(Replay(id=replay_id, operator=operator, requested_by=actor.key_id,
                       filter_json=json.dumps(filter_), count=len(claims), created_at=utcnow()))
    _requeue(session, claims, replay_id)
    audit_log.append(session, actor, "operator.replay", object_id=operator, filter=filter_,
                     count=len(claims), replay_id=replay_id)
    return replay_id, len(claims)


def _requeue(session: UnitOfWork, claims: Iterable[Claim], replay_id: str) -> None:
    now = utcnow()
    for claim in claims:
        if claim.status == "failed":
            claim.attempts = 0
        claim.next_attempt_at = now
        claim.replay_id = replay_id
        claims_repository.record(session, claim, "queued", f"requeued by {replay_id}")
