"""The claims service and the drain driven without HTTP: an operator faked in memory (it
implements `adapters.base.OperatorAdapter`) and a fake clock.

The gateway reads the wall clock through `gateway.storage.models.utcnow` (imported by
name everywhere, so the seam is the `datetime` it reads) and the drain its intervals
through `time.monotonic` in `gateway.queue.drain`; `FakeClock.install` replaces both,
so deadlines, leases and retry times move only when a test says so. The database is a
real one (the `settings` fixture's), and the app's lifespan builds the context, with no
worker running: each drain step is taken by the test.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from synthetic import FINESS, claim_body

from adapters.base import (
    ClaimOutcome,
    OperatorAdapter,
    OperatorClaim,
    OperatorUnavailable,
    RightsAnswer,
    RightsRequest,
)
from gateway.claims import repository, service, transitions
from gateway.claims.schemas import ClaimCreate
from gateway.context import AppContext
from gateway.errors import ClaimInFlight
from gateway.keys.admin import create_key
from gateway.queue import drain
from gateway.queue.drain import DrainWorker
from gateway.resilience.operators import Operator
from gateway.security.apikeys import Principal
from gateway.storage import models
from gateway.storage.models import Claim

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- the fakes


class FakeClock:
    """Wall and monotonic time that move only with `advance`."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self.ticks = 1_000.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.ticks += seconds

    def monotonic(self) -> float:
        return self.ticks

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        clock = self

        class ClockedDatetime(datetime):
            @classmethod
            def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
                return clock.now if tz is not None else clock.now.replace(tzinfo=None)

        monkeypatch.setattr(models, "datetime", ClockedDatetime)  # what utcnow() reads
        monkeypatch.setattr(drain, "time", SimpleNamespace(monotonic=self.monotonic))


class ProcessDied(Exception):  # noqa: N818 - what it stands for, not an error to handle
    """Raised by the fake after the operator recorded a claim: the gateway's process stops
    there (killed), before it records the answer."""


@dataclass
class FakeOperator:
    """An operator in memory: it answers (accepted) once per idempotency key and keeps
    that answer, or is down; it counts every submission and lookup."""

    name: str
    down: bool = False
    ambiguous: bool = False  # when down: the request may have reached it (a read timeout)
    die_after_receiving: bool = False
    answers: dict[str, ClaimOutcome] = field(default_factory=dict)
    submitted: list[str] = field(default_factory=list)
    looked_up: list[str] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)

    def _available(self) -> None:
        if self.down:
            raise OperatorUnavailable("connection refused" if not self.ambiguous
                                      else "read timeout", ambiguous=self.ambiguous)

    async def health(self) -> None:
        self._available()

    async def check_rights(self, request: RightsRequest) -> RightsAnswer:
        self._available()
        return RightsAnswer(covered=True)

    async def submit_claim(self, claim: OperatorClaim) -> ClaimOutcome:
        self.submitted.append(claim.idempotency_key)
        self.bodies.append(claim.body)
        self._available()
        outcome = self.answers.setdefault(claim.idempotency_key, ClaimOutcome(
            "accepted", reference=f"FAKE-{len(self.answers) + 1}", amc_cents=280))
        if self.die_after_receiving:
            raise ProcessDied(claim.idempotency_key)
        return outcome

    async def lookup_claim(self, idempotency_key: str) -> ClaimOutcome | None:
        self.looked_up.append(idempotency_key)
        self._available()
        return self.answers.get(idempotency_key)

    async def cancel_claim(self, idempotency_key: str) -> None:
        self._available()


# --------------------------------------------------------------------------- fixtures


@dataclass
class Gateway:
    ctx: AppContext
    operator: Operator
    fake: FakeOperator
    clock: FakeClock
    principal: Principal

    async def submit(self, invoice: str) -> service.SubmitResult:
        return await service.submit(ctx=self.ctx, principal=self.principal,
                                    claim_in=ClaimCreate.model_validate(claim_body(invoice)),
                                    idempotency_key=None)

    async def claim(self, claim_id: str) -> Claim:
        return await self.ctx.db.read(lambda s: repository.load(s, claim_id))

    async def until(self, claim_id: str, status: str, timeout_s: float = 5.0) -> Claim:
        """The claim once it has `status` (a drain's sends run as tasks): bounded."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + timeout_s
        while (claim := await self.claim(claim_id)).status != status:
            assert loop.time() < ends, f"{claim_id} still {claim.status}, never {status}"
            await asyncio.sleep(0.01)
        return claim


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    # today's date, so that the service date of the synthetic claims stays valid
    fake = FakeClock(datetime.now(UTC).replace(microsecond=0))
    fake.install(monkeypatch)
    return fake


@pytest.fixture
async def gateway(clock, app, settings, monkeypatch) -> Gateway:  # type: ignore[no-untyped-def]
    # the retry jitter, fixed (not secrecy)
    monkeypatch.setattr(transitions, "_rng", random.Random(7))  # noqa: S311
    ctx: AppContext = app.state.context
    operator = ctx.operators.get("opera")
    assert operator is not None
    fake = FakeOperator("opera")
    assert isinstance(fake, OperatorAdapter)
    operator.adapter = fake
    key_id, _ = create_key(settings, role="pharmacy", finess=FINESS)
    principal = Principal(key_id=key_id, role="pharmacy", finess=FINESS, operators=None)
    return Gateway(ctx, operator, fake, clock, principal)


def lease_deadline(operator: Operator) -> timedelta:
    """How long a synchronous sender holds its claim: its deadline plus grace."""
    return timedelta(seconds=operator.settings.deadline_s + service.LEASE_GRACE_S)


async def raises(kind: type[BaseException], call: Callable[[], Awaitable[object]]) -> None:
    with pytest.raises(kind):
        await call()


# --------------------------------------------------------------------------- the tests


async def test_an_operator_that_answers_settles_the_claim_at_once(gateway):
    result = await gateway.submit("S1")
    assert (result.http_status, result.claim.status) == (201, "accepted")
    assert result.claim.amc_covered_cents == 280 and result.claim.operator_reference == "FAKE-1"
    assert gateway.fake.submitted == [result.claim.id]  # the claim id is the idempotency key
    assert gateway.fake.bodies[0]["claim_id"] == result.claim.id
    stored = await gateway.claim(result.claim.id)
    assert (stored.status, stored.first_http_status, stored.maybe_sent) == ("accepted", 201,
                                                                            False)


async def test_a_claim_is_queued_while_the_operator_is_down_and_sent_once_when_due(gateway):
    gateway.fake.down = True
    result = await gateway.submit("S2")
    assert (result.http_status, result.claim.status) == (202, "queued")
    claim_id = result.claim.id
    queued = await gateway.claim(claim_id)
    assert queued.attempts == 1 and not queued.maybe_sent  # refused: it never got there
    due = queued.next_attempt_at
    assert due > gateway.clock.now  # a retry time, with jitter, after the failure
    tries = len(gateway.fake.submitted)  # the guard's own retries within the deadline
    assert tries >= 1 and set(gateway.fake.submitted) == {claim_id}

    gateway.fake.down = False
    worker = DrainWorker(gateway.ctx, gateway.operator)
    gateway.clock.advance((due - gateway.clock.now).total_seconds() - 0.01)
    assert await worker.step() is False  # looked, and nothing was due yet
    assert len(gateway.fake.submitted) == tries
    assert (await gateway.claim(claim_id)).status == "queued"

    gateway.clock.advance(0.02)
    assert await worker.step() is True
    settled = await gateway.until(claim_id, "accepted")
    assert gateway.fake.submitted == [claim_id] * (tries + 1)  # sent once by the drain
    assert gateway.fake.looked_up == []  # refused before: nothing to look up
    assert settled.amc_covered_cents == 280


async def test_an_open_breaker_queues_without_calling_the_operator(gateway):
    gateway.fake.down = True
    for index in range(gateway.operator.settings.breaker_fail_max):
        assert (await gateway.submit(f"B{index}")).claim.status == "queued"
    assert gateway.operator.breaker.state == "open"
    calls = len(gateway.fake.submitted)
    gateway.fake.down = False  # back, but the breaker does not know yet
    result = await gateway.submit("B-after")
    assert (result.http_status, result.claim.status) == (202, "queued")
    assert len(gateway.fake.submitted) == calls
    worker = DrainWorker(gateway.ctx, gateway.operator)
    assert await worker.step() is False  # the drain sends nothing while it is open
    assert len(gateway.fake.submitted) == calls


async def test_an_ambiguous_failure_is_looked_up_then_sent_once(gateway):
    gateway.fake.down, gateway.fake.ambiguous = True, True
    claim_id = (await gateway.submit("S3")).claim.id
    queued = await gateway.claim(claim_id)
    assert queued.status == "queued" and queued.maybe_sent
    gateway.fake.down = False
    gateway.clock.advance((queued.next_attempt_at - gateway.clock.now).total_seconds())
    tries = len(gateway.fake.submitted)
    assert await DrainWorker(gateway.ctx, gateway.operator).step() is True
    await gateway.until(claim_id, "accepted")
    assert gateway.fake.looked_up == [claim_id]  # it had not got it: sent after the lookup
    assert gateway.fake.submitted == [claim_id] * (tries + 1)


async def test_a_dead_senders_lease_expires_after_deadline_and_grace_then_is_looked_up(
        gateway):
    gateway.fake.die_after_receiving = True
    submitted_at = gateway.clock.now
    with pytest.raises(ProcessDied):
        await gateway.submit("S4")
    claim_id = gateway.fake.submitted[0]
    gateway.fake.die_after_receiving = False
    pending = await gateway.claim(claim_id)
    assert pending.status == "pending"  # the operator has it; the gateway never heard
    assert pending.lease_until == submitted_at + lease_deadline(gateway.operator)

    worker = DrainWorker(gateway.ctx, gateway.operator)
    gateway.clock.now = pending.lease_until  # not expired yet: still the sender's
    assert await worker.sweep_abandoned(force=True) == 0
    assert (await gateway.claim(claim_id)).status == "pending"

    gateway.clock.advance(0.5)  # past deadline + grace: the sender is taken for dead
    gateway.clock.ticks += drain.SWEEP_EVERY_S  # and the drain's next sweep is due
    assert await worker.step() is True  # swept back, looked up, settled
    settled = await gateway.until(claim_id, "accepted")
    assert gateway.fake.looked_up == [claim_id]
    assert gateway.fake.submitted == [claim_id]  # never sent twice
    assert settled.operator_reference == "FAKE-1"


async def test_a_retry_of_a_claim_is_in_flight_until_its_first_requests_deadline(gateway):
    gateway.fake.die_after_receiving = True
    with pytest.raises(ProcessDied):
        await gateway.submit("S5")
    claim_id = gateway.fake.submitted[0]
    gateway.fake.die_after_receiving = False
    created = (await gateway.claim(claim_id)).created_at

    gateway.clock.now = created + lease_deadline(gateway.operator) - timedelta(seconds=0.1)
    await raises(ClaimInFlight, lambda: gateway.submit("S5"))  # it may still answer

    gateway.clock.now = created + lease_deadline(gateway.operator) + timedelta(seconds=0.1)
    retry = await gateway.submit("S5")
    assert (retry.http_status, retry.replayed, retry.claim.id) == (202, True, claim_id)
    requeued = await gateway.claim(claim_id)
    assert requeued.status == "queued" and requeued.maybe_sent  # looked up before any resend
    assert gateway.fake.submitted == [claim_id]
