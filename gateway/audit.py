"""The audit trail: who did what to which object, and how it ended.

Written in the same transaction as the action it records; never raw personal
data (ids, counts and filters only).
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session

from gateway.models import AuditEntry, utcnow
from gateway.security.apikeys import Principal


def audit(
    session: Session, actor: Principal, action: str, *, object_id: str | None = None,
    outcome: str = "ok", **details: Any,
) -> None:
    session.add(AuditEntry(
        at=utcnow(), actor=actor.key_id, role=actor.role, action=action, object_id=object_id,
        outcome=outcome, details_json=json.dumps(details, sort_keys=True, default=str)[:4000],
    ))
