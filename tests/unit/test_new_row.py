"""`new_row` builds the same row as the model's constructor, and the database stores it
the same way, through `session.add` and through a deferred work's executemany."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta

import pytest
from sqlalchemy import inspect
from sqlmodel import select

from gateway.storage.models import AuditEntry, Claim, ClaimHistory, Receipt, new_row, utcnow
from gateway.storage.unit import UnitOfWork

pytestmark = pytest.mark.anyio

NOW = utcnow()


def claim_values(claim_id: str) -> dict[str, object]:
    return {"id": claim_id, "finess": "330001231", "invoice_number": f"F-{claim_id}",
            "request_hash": "r" * 64, "nir_hash": "n" * 64, "beneficiary_hash": "b" * 64,
            "operator": "opera", "insurer_number": "80000001", "service_date": date(2026, 11, 2),
            "status": "queued", "amc_requested_cents": 1234, "payload_enc": b"\x01sealed",
            "created_at": NOW, "updated_at": NOW, "queued_at": NOW}


def receipt_values(claim_id: str) -> dict[str, object]:
    return {"id": f"rcp_{claim_id}", "claim_id": claim_id, "finess": "330001231",
            "operator": "opera", "insurer_number": "80000001", "invoice_number": "F-1",
            "beneficiary_hash": "b" * 64, "service_date": date(2026, 11, 2), "amc_cents": 1234,
            "patient_due_cents": 0, "basis": "card", "status": "provisional", "kid": "k1",
            "token": "a.b.c", "issued_at": NOW, "expires_at": NOW + timedelta(days=30),
            "updated_at": NOW}


@pytest.mark.parametrize("model, values", [
    (Claim, claim_values("clm_1")),
    (Receipt, receipt_values("clm_1")),
    (ClaimHistory, {"claim_id": "clm_1", "status": "queued", "at": NOW, "detail": "x"}),
    (AuditEntry, {"id": 7, "at": NOW, "actor": "key_1", "role": "pharmacy",
                  "action": "claim.submit", "outcome": "queued"}),
])
def test_the_same_row_as_the_constructor(model, values) -> None:
    built, constructed = new_row(model, **values), model(**values)
    assert built == constructed
    assert built.model_dump() == constructed.model_dump()  # defaults filled in alike
    assert built.model_fields_set == constructed.model_fields_set == set(values)
    assert inspect(built).transient
    name = next(k for k, v in values.items() if isinstance(v, str) and k != "id")
    setattr(built, name, "changed")  # set like any instance, through the ORM's events
    assert getattr(built, name) == "changed" and built != constructed


def test_the_first_row_of_a_process_reads_like_any_other() -> None:
    """Attribute access needs configured mappers; a constructor configures them, and so
    must `new_row` when it builds the first instance of a fresh process."""
    code = ("from gateway.storage.models import ClaimHistory, new_row, utcnow; "
            "print(new_row(ClaimHistory, claim_id='clm_1', status='queued', at=utcnow()).status)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,  # noqa: S603
                         timeout=60, check=False)
    assert (out.returncode, out.stdout.strip()) == (0, "queued"), out.stderr[-500:]


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError, match="no field stauts"):
        new_row(ClaimHistory, claim_id="clm_1", stauts="queued", at=NOW)


@pytest.mark.parametrize("deferred", [False, True], ids=["session.add", "deferred"])
async def test_stored_and_read_back(database, deferred: bool) -> None:
    claim_id = f"clm_{'d' if deferred else 'a'}"

    def store(session: UnitOfWork) -> None:
        session.add(new_row(Claim, **claim_values(claim_id)))
        session.add(new_row(Receipt, **receipt_values(claim_id)))
        session.add(new_row(ClaimHistory, claim_id=claim_id, status="queued", at=NOW,
                               detail="received"))

    await database.write(store, deferred=deferred)

    def read(session: UnitOfWork) -> tuple[Claim, Receipt, ClaimHistory]:
        return (session.get(Claim, claim_id),
                session.exec(select(Receipt).where(Receipt.claim_id == claim_id)).one(),
                session.exec(select(ClaimHistory).where(ClaimHistory.claim_id == claim_id)).one())

    claim, receipt, step = await database.read(read)
    assert claim.model_dump(include=set(claim_values(claim_id))) == claim_values(claim_id)
    assert claim.coverage_decision == "not_needed"  # a default, written by the insert
    assert receipt.model_dump(include=set(receipt_values(claim_id))) == receipt_values(claim_id)
    assert (step.status, step.detail, step.at) == ("queued", "received", NOW)
    assert step.id is not None


def test_a_row_no_session_holds_takes_assignments_without_change_tracking() -> None:
    """`TableRow.__setattr__`: a new row is inserted from its instance dict, so an
    assignment goes straight there (no history kept), and pydantic still counts the field
    as set."""
    row = new_row(Claim, **claim_values("clm_fast"))
    row.status = "failed"
    row.attempts = 3
    assert (row.status, row.attempts) == ("failed", 3)
    assert not inspect(row).attrs.status.history.has_changes()
    assert {"status", "attempts"} <= row.model_fields_set


async def test_a_row_a_session_holds_is_still_tracked(database) -> None:
    """Added to a session (pending) or loaded (persistent), an assignment goes through
    SQLAlchemy's events: the flush writes it."""
    def add_then_change(session: UnitOfWork) -> None:
        row = new_row(Claim, **claim_values("clm_tracked"))
        session.add(row)
        row.status = "sent"
        assert inspect(row).attrs.status.history.has_changes()

    def change_loaded(session: UnitOfWork) -> None:
        row = session.get(Claim, "clm_tracked")
        assert row is not None
        row.attempts = 7
        assert inspect(row).attrs.attempts.history.has_changes()

    await database.write(add_then_change)
    await database.write(change_loaded)
    stored = await database.read(lambda session: session.get(Claim, "clm_tracked"))
    assert (stored.status, stored.attempts) == ("sent", 7)
