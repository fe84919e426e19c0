"""What a request needs from the running gateway, built once in the lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.audit.trail import AuditLog
from gateway.events.notifier import EventHub
from gateway.identity.credentials import CredentialKeys
from gateway.resilience.operators import OperatorDirectory
from gateway.security.apikeys import KeyCache
from gateway.security.crypto import Cipher
from gateway.security.ratelimit import RateLimiter
from gateway.settings import Settings
from gateway.storage.db import Database

if TYPE_CHECKING:
    from gateway.identity.admin import Accounts


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
    credentials: CredentialKeys
    events: EventHub  # waiting long-polls, woken by new events (gateway.events.notifier)
    drains: dict[str, Any] = field(default_factory=dict)  # operator -> DrainWorker
    key_cache: KeyCache = field(default_factory=KeyCache)  # see gateway.web.deps.submitter
    psc: Any = None  # gateway.identity.psc.ProSanteConnect, when configured

    def accounts(self) -> Accounts:
        from gateway.identity.admin import Accounts

        return Accounts(self.credentials, self.cipher, self.audit_log,
                        frozenset(operator.name for operator in self.operators))
