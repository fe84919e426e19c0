"""What a request needs from the running gateway, built once in the lifespan."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from gateway.audit.trail import AuditLog
from gateway.audit.watch import TrailWatch
from gateway.events.notifier import EventHub
from gateway.identity.admin import Accounts
from gateway.identity.credentials import CredentialKeys
from gateway.identity.psc import ProSanteConnect
from gateway.receipts.issuer import ReceiptIssuer
from gateway.resilience.operators import OperatorDirectory
from gateway.security.apikeys import KeyCache
from gateway.security.crypto import Cipher
from gateway.security.ratelimit import RateLimiter
from gateway.settings import Settings
from gateway.storage.db import Database


class Drain(Protocol):
    """What a request may do with an operator's drain (`gateway.queue.drain.DrainWorker`)."""

    wake: asyncio.Event  # set: look at the queue now, not at the next tick

    def current_rate(self) -> float:
        """Claims sent per second lately."""
        ...


@dataclass(slots=True)
class AppContext:
    settings: Settings
    db: Database
    cipher: Cipher
    operators: OperatorDirectory
    limiter: RateLimiter
    instance_id: str
    receipts: ReceiptIssuer
    audit_log: AuditLog
    credentials: CredentialKeys
    events: EventHub  # waiting long-polls, woken by new events (gateway.events.notifier)
    trail: TrailWatch  # the audit trail's integrity, for the console (gateway.audit.watch)
    drains: dict[str, Drain] = field(default_factory=dict)  # by operator name
    key_cache: KeyCache = field(default_factory=KeyCache)  # see gateway.web.deps.submitter
    psc: ProSanteConnect | None = None  # when Pro Santé Connect is configured

    def accounts(self) -> Accounts:
        return Accounts(self.credentials, self.cipher, self.audit_log,
                        frozenset(operator.name for operator in self.operators))
