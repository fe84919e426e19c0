"""Hand-over schemas (docs/openapi.json, `operations` tag): ids, counts, who and when."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel

from gateway.storage.models import HandoverBatch

BatchId = Annotated[str, Path(pattern=r"^bat_[0-9A-Z]{26}$")]


class BatchPublic(BaseModel):
    """A batch: `exported` (its file made) until acknowledged in full or released."""

    id: str
    operator: str
    state: Literal["exported", "acknowledged", "released"]
    count: int
    settled: int  # claims settled by acknowledgements
    awaiting: int  # claims still exported, awaiting an acknowledgement
    created_at: datetime
    created_by: str
    closed_at: datetime | None
    closed_by: str | None

    @classmethod
    def of(cls, batch: HandoverBatch, awaiting: int) -> BatchPublic:
        return cls(id=batch.id, operator=batch.operator, state=batch.state,  # type: ignore[arg-type]
                   count=batch.count, settled=batch.settled, awaiting=awaiting,
                   created_at=batch.created_at, created_by=batch.created_by,
                   closed_at=batch.closed_at, closed_by=batch.closed_by)


class AcksImported(BaseModel):
    batch_id: str
    accepted: int
    rejected: int
    awaiting: int


class BatchReleased(BaseModel):
    batch_id: str
    released: int  # claims put back in the queue
