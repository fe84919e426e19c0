"""The harvesting pattern of 2024, stopped: budgets of distinct people per key and per pharmacy.

A pharmacy checks the rights of the people at its counter: a few hundred a day at a
busy one. A stolen key used to harvest a population checks thousands. Each rights
lookup counts the person (the keyed hash of their NIR) once per budget: the key's and
its pharmacy's (all its keys together), for the current UTC hour and day, in the
database (`rights_lookups`), so every instance shares one count. Looking the same
person up again in the period costs nothing. A lookup that would count one person
more than a budget allows is refused with 429, never reaches the operator, and
suspends the key until operations lift it (`gateway keys lift`, the API, the console):
audited as `key.suspend` by `system`, announced by a `key.suspended` event to the
pharmacy, counted in `gateway_rights_budget_exceeded_total{scope}` (no key id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import structlog

from gateway.audit.trail import AuditLog
from gateway.claims.repository import add_event
from gateway.errors import RateLimited, invalid_key
from gateway.identity.credentials import CredentialKeys
from gateway.observability.metrics import RIGHTS_BUDGET_EXCEEDED
from gateway.rights import repository
from gateway.security import apikeys
from gateway.security.apikeys import Principal
from gateway.settings import LimitsSettings
from gateway.storage.models import utcnow
from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)
Kind = Literal["key", "pharmacy"]
Span = Literal["hour", "day"]
WORDS = {("key", "hour"): "in an hour with this key", ("key", "day"): "in a day with this key",
         ("pharmacy", "hour"): "in an hour for this pharmacy",
         ("pharmacy", "day"): "in a day for this pharmacy"}


class RightsBudgetExceeded(RateLimited):
    type, title = "rights-budget-exceeded", "Too many different people looked up"


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget of one lookup: whose (`scope`), which period, how many people."""

    kind: Kind
    span: Span
    scope: str  # key:<id> | finess:<FINESS>
    period: str  # YYYY-MM-DDTHH | YYYY-MM-DD (UTC)
    limit: int
    ends_at: datetime

    @property
    def cell(self) -> repository.Cell:
        return self.scope, self.period

    @property
    def reason(self) -> str:
        return f"rights budget: more than {self.limit} people {WORDS[self.kind, self.span]}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """The budgets this lookup would overrun, and whether it suspended the key just now."""

    over: list[Budget]
    suspended_now: bool

    @property
    def retry_after_s(self) -> int:
        """Until the last of those periods ends (and the key is lifted)."""
        return max(1, int((max(b.ends_at for b in self.over) - utcnow()).total_seconds()))


def budgets_of(principal: Principal, limits: LimitsSettings, now: datetime) -> list[Budget]:
    hour = now.replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    spans: list[tuple[Span, str, datetime]] = [
        ("hour", f"{hour:%Y-%m-%dT%H}", hour + timedelta(hours=1)),
        ("day", f"{day:%Y-%m-%d}", day + timedelta(days=1))]
    scopes: list[tuple[Kind, str, int, int]] = [
        ("key", f"key:{principal.key_id}", limits.rights_people_per_key_per_hour,
         limits.rights_people_per_key_per_day)]
    if principal.finess:
        scopes.append(("pharmacy", f"finess:{principal.finess}",
                       limits.rights_people_per_pharmacy_per_hour,
                       limits.rights_people_per_pharmacy_per_day))
    return [Budget(kind, span, scope, period, per_hour if span == "hour" else per_day, ends)
            for kind, scope, per_hour, per_day in scopes for span, period, ends in spans]


def admit(
    session: UnitOfWork, *, principal: Principal, subject: str, limits: LimitsSettings,
    credentials: CredentialKeys, audit_log: AuditLog, now: datetime | None = None,
) -> Refusal | None:
    """Count this person in every budget of the key and its pharmacy, in the caller's
    transaction. None: counted, the lookup may go on. Else nothing is counted and the
    key is suspended (audited and announced in the same transaction)."""
    if not apikeys.is_live(session, principal.key_id, credentials):  # KeySuspended, too
        raise invalid_key()
    when = now or utcnow()
    budgets = budgets_of(principal, limits, when)
    repository.lock_scopes(session, [b.scope for b in budgets])
    known = repository.counted_in(session, subject=subject, cells=[b.cell for b in budgets])
    fresh = [b for b in budgets if b.cell not in known]
    if not fresh:
        return None
    counted = repository.counts(session, cells=[b.cell for b in fresh])
    over = [b for b in fresh if counted.get(b.cell, 0) >= b.limit]
    if over:
        return Refusal(over, _suspend(session, principal, over[0], credentials, audit_log))
    if budgets[0] in fresh and counted.get(budgets[0].cell, 0) == 0:  # key's first this hour
        repository.forget_before(session, budgets[1].period)  # days gone, for everyone
    repository.count_in(session, subject=subject, cells=[b.cell for b in fresh])
    return None


def _suspend(session: UnitOfWork, principal: Principal, budget: Budget,
             credentials: CredentialKeys, audit_log: AuditLog) -> bool:
    if not apikeys.suspend(session, principal.key_id, budget.reason, credentials):
        return False
    audit_log.system(session, "key.suspend", object_id=principal.key_id,
                     finess=principal.finess, scope=budget.kind, span=budget.span,
                     limit=budget.limit)
    if principal.finess:
        add_event(session, finess=principal.finess, type_="key.suspended", claim_id=None,
                  at=utcnow())
    return True


def refuse(principal: Principal, refusal: Refusal) -> RightsBudgetExceeded:
    """Count and log the refusal (ids and figures only); the error to raise."""
    for kind in sorted({b.kind for b in refusal.over}):
        RIGHTS_BUDGET_EXCEEDED.labels(kind).inc()
    first = refusal.over[0]
    if refusal.suspended_now:
        log.warning("key.suspended", key_id=principal.key_id, finess=principal.finess,
                    scope=first.kind, span=first.span, limit=first.limit)
    return RightsBudgetExceeded(
        f"{first.reason}: nothing was sent to the operator and this key is suspended "
        "pending review; ask the gateway's operations team to lift it",
        headers={"Retry-After": str(refusal.retry_after_s)})
