"""A pharmacy's receipt decision lock on PostgreSQL, sent with the sums it protects: the
sums must still be read once the lock is granted (a read taken before would let two
instances both pass the outstanding cap), and a transaction already holding the lock
reads them with the intake's one statement."""

from __future__ import annotations

import threading
from datetime import date

import pytest

from gateway.claims.repository import read_for_intake
from gateway.receipts import repository
from gateway.storage.db import Database
from gateway.storage.deferred import DeferredRows
from gateway.storage.models import Claim, Receipt, ReceiptExposure, new_row, utcnow
from gateway.storage.unit import UnitOfWork

pytestmark = pytest.mark.usefixtures("postgres_only")

FINESS = "330000018"
PERSON = "b" * 64  # a beneficiary's keyed hash
DAY = date(2026, 12, 6)


@pytest.fixture
def postgres_only(database_url):
    if database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's advisory locks")


@pytest.fixture
def db(database_url):
    database = Database(database_url)
    yield database
    database.engine.dispose()


def staging(session: UnitOfWork) -> None:
    """As the write group runs a deferred work: reads are remembered, rows staged."""
    session.staging = DeferredRows()
    session.staging.active = True


def not_again() -> int:
    raise AssertionError("read again: the sums were not handed over")


def receipt(claim_id: str, amc_cents: int) -> Receipt:
    now = utcnow()
    return new_row(Receipt, id=f"rcp_{claim_id}", claim_id=claim_id, finess=FINESS,
                   operator="opera", insurer_number="801234567", invoice_number=claim_id,
                   beneficiary_hash=PERSON, service_date=DAY, amc_cents=amc_cents,
                   patient_due_cents=0, basis="card", status=repository.OPEN, kid="k",
                   token="t", issued_at=now, expires_at=now, updated_at=now)


def test_the_sums_read_with_the_lock_see_what_its_last_holder_committed(db):
    """One transaction holds the pharmacy's lock and adds a receipt of 500 cents; another
    sends the lock and the sums in one round trip meanwhile. Its read must wait for the
    lock and count the 500 cents once the first commits."""
    db.write_now(lambda session: session.add(new_row(
        Claim, id="clm_1", finess=FINESS, invoice_number="I1", request_hash="h",
        nir_hash=PERSON, beneficiary_hash=PERSON, operator="opera",
        insurer_number="801234567", service_date=DAY, status="queued",
        amc_requested_cents=500, payload_enc=b"x", created_at=utcnow(), updated_at=utcnow())))
    held, release = threading.Event(), threading.Event()

    def hold(session: UnitOfWork) -> None:
        repository.lock_decisions(session, FINESS, PERSON, DAY)
        session.add(receipt("clm_1", 500))
        session.flush()
        held.set()
        release.wait(10)

    holder = threading.Thread(target=db.write_now, args=(hold,))
    holder.start()
    seen: list[tuple[int, int]] = []

    def decide(session: UnitOfWork) -> None:
        staging(session)
        repository.lock_decisions(session, FINESS, PERSON, DAY)
        assert session.holds(repository.decision_lock(FINESS))
        seen.append((session.remember(("beneficiary", PERSON, DAY), not_again),
                     session.remember(("outstanding", FINESS), not_again)))

    try:
        assert held.wait(10)
        waiting = threading.Thread(target=db.write_now, args=(decide,))
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive()  # the lock is held: the second decision waits
    finally:
        release.set()
        holder.join(10)
    waiting.join(10)
    assert seen == [(500, 500)]


def test_a_transaction_holding_the_lock_reads_the_sums_with_the_intake(db):
    db.write_now(lambda session: session.add(new_row(
        ReceiptExposure, finess=FINESS, operator="opera", outstanding_cents=1200)))

    def intake(session: UnitOfWork) -> tuple[int, int]:
        staging(session)
        read_for_intake(session, finess=FINESS, invoice_number="I2", idempotency_key=None,
                        exposure_of=(PERSON, DAY))
        assert session.staging is not None
        assert ("outstanding", FINESS) not in session.staging._remembered  # no lock yet
        repository.lock_decisions(session, FINESS, "c" * 64, DAY)  # another person's claim
        session.staging._remembered.clear()
        read_for_intake(session, finess=FINESS, invoice_number="I3", idempotency_key=None,
                        exposure_of=(PERSON, DAY))
        return (session.remember(("beneficiary", PERSON, DAY), not_again),
                session.remember(("outstanding", FINESS), not_again))

    assert db.write_now(intake) == (0, 1200)
