"""What the keys API answers: a key's state, never its secret or digest."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from gateway.storage.models import ApiKey


class KeyStatus(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "key_0123456789abcdef", "role": "pharmacy", "finess": "330001231",
        "suspended": False, "suspended_at": None, "suspension_reason": None}]})

    id: str
    role: str
    finess: str | None
    suspended: bool
    suspended_at: datetime | None
    suspension_reason: str | None

    @classmethod
    def of(cls, row: ApiKey) -> KeyStatus:
        return cls(id=row.id, role=row.role, finess=row.finess,
                   suspended=row.suspended_at is not None, suspended_at=row.suspended_at,
                   suspension_reason=row.suspension_reason)
