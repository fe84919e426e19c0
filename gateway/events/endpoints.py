"""`GET /v1/events`: the pharmacy's events, oldest first, with a cursor and long-poll.

The events are written by the same transaction as the change they announce (the
outbox in `claims.repository.record`), so the feed never misses or invents one.
A long-poll waits to be woken by a new event of its pharmacy, on this instance or
another (`service`); reads count in the key's `reads` limit.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from gateway.errors import ValidationFailed, problem_responses
from gateway.events import service
from gateway.web.deps import ContextDep, PharmacyDep, rate_limited

router = APIRouter(prefix="/v1/events", tags=["events"])
MAX_WAIT_S = 30


MESSAGES = {
    "receipt.contested": "La complémentaire a refusé la demande : le reçu provisoire est "
                         "contesté, la pharmacie doit recouvrer la part AMC auprès du patient.",
    "receipt.honored": "La complémentaire a accepté la demande : le reçu provisoire est honoré.",
    "claim.failed": "Envoi abandonné après plusieurs échecs : en attente des équipes "
                    "d'exploitation.",
    "claim.exported": "Demande remise à la complémentaire dans un lot : sa réponse "
                      "arrivera plus tard, sans rien à faire d'ici là.",
}


class EventPublic(BaseModel):
    id: str
    type: str
    claim_id: str | None
    at: str
    message: str | None = None  # what the pharmacy must do, when there is something to do


class EventPage(BaseModel):
    events: list[EventPublic]
    next: str


def encode(position: int) -> str:
    return base64.urlsafe_b64encode(f"ev:{position}".encode()).decode().rstrip("=")


def decode(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith("ev:") and text[3:].isdigit():
            return int(text[3:])
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise ValidationFailed("invalid cursor", errors=[
        {"field": "after", "message": "not a cursor from `next`"}])


@router.get("", response_model=EventPage, dependencies=[Depends(rate_limited("reads"))],
            responses=problem_responses(401, 403, 422, 429),
            summary="Own events, oldest first; `wait` long-polls up to 30 s",
            description="At most `[limits] long_polls_per_key` long-polls of a key wait at "
                        "once (429 beyond); a waiting long-poll answers as soon as an event "
                        "of its pharmacy is committed, on any instance.")
async def events(
    ctx: ContextDep, principal: PharmacyDep,
    after: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0,
) -> EventPage:
    position = decode(after) if after else 0
    found = await service.read(ctx=ctx, principal=principal, after=position, limit=limit,
                               wait=wait)
    return EventPage(
        events=[EventPublic(id=e.event_id, type=e.type, claim_id=e.claim_id,
                            at=e.at.isoformat(), message=MESSAGES.get(e.type)) for e in found],
        # the events found were read from the database: their id is set
        next=encode(found[-1].id if found else position),  # type: ignore[arg-type]
    )
