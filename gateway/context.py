"""What a request needs from the running gateway, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.audit import AuditLog
from gateway.db import Database
from gateway.operators import OperatorDirectory
from gateway.security.abuse import LookupWatch
from gateway.security.apikeys import KeyCache
from gateway.security.crypto import Cipher
from gateway.security.ratelimit import RateLimiter
from gateway.settings import Settings


@dataclass(slots=True)
class AppContext:
    settings: Settings
    db: Database
    cipher: Cipher
    operators: OperatorDirectory
    limiter: RateLimiter
    instance_id: str
    receipts: Any  # gateway.receipts.issuer.ReceiptIssuer
    audit_log: AuditLog
    rights_watch: LookupWatch
    drains: dict[str, Any] = field(default_factory=dict)  # operator -> DrainWorker
    key_cache: KeyCache = field(default_factory=KeyCache)  # see gateway.deps.submitter
