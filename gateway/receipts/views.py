"""What a receipt page shows: public figures only, never the beneficiary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class ReceiptView:
    id: str
    status: str  # provisional | honored | contested | void
    amc_cents: int
    patient_due_cents: int
    finess: str
    operator: str
    insurer_number: str
    invoice_number: str
    service_date: date
    basis: str  # card | cached_rights
    issued_at: datetime
    expires_at: datetime
    verify_url: str
