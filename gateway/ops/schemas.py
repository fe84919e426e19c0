"""Operations schemas (docs/openapi.json, `operations` tag): no personal data anywhere."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ClaimId = Annotated[str, StringConstraints(pattern=r"^clm_[0-9A-Za-z]{1,40}$")]


class _OperatorHead(BaseModel):
    name: str
    state: Literal["closed", "open", "half_open"]
    state_since: datetime
    paused: bool


class OperatorState(_OperatorHead):
    """What a pharmacy key sees: whether claims to this operator go through now."""


class OperatorPublic(_OperatorHead):
    """What operations and admin keys see: who paused it and why, its queue, its failures."""

    paused_by: str | None = None
    pause_reason: str | None = None
    queued: int
    pending: int
    failed: int
    exported: int  # handed over in batch files, awaiting the operator's acknowledgement
    oldest_queued_at: datetime | None = None
    last_failure_at: datetime | None
    last_success_at: datetime | None


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"reason": "opérateur en maintenance jusqu'à 14h"}]})

    reason: str = Field("", max_length=500, pattern=r"^[^\x00-\x08\x0b-\x1f\x7f]*$")


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"status": "failed", "dry_run": True},
                     {"claim_ids": ["clm_01J0000000000000000000000"], "dry_run": False}]})

    status: Literal["failed", "queued"] | None = None
    claim_ids: list[ClaimId] | None = Field(None, min_length=1, max_length=10000)
    dry_run: bool = False


class ReplayPublic(BaseModel):
    replay_id: str | None
    count: int
    dry_run: bool


class ReplayProgress(BaseModel):
    replay_id: str
    operator: str
    count: int
    remaining: int
    running: bool
    requested_by: str
    created_at: datetime
    finished_at: datetime | None


class QueuedClaim(BaseModel):
    id: str
    invoice_number: str
    status: str
    attempts: int
    last_error: str | None
    queued_at: datetime | None


class QueuePage(BaseModel):
    claims: list[QueuedClaim]
    next: str | None
