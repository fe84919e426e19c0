"""The demo's synthetic pharmacy and claim: valid checksums, nobody real."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

DEMO_FINESS = "330001231"


def sample_claim(invoice_number: str) -> dict[str, Any]:
    """A synthetic claim (valid checksums, nobody real) dated today."""
    today = datetime.now(UTC).date()
    return {
        "invoice_number": invoice_number,
        "service_date": today.isoformat(),
        "dispenser": {"finess": DEMO_FINESS},
        "prescriber": {"rpps": "10001234565"},
        "beneficiary": {"nir": "185077511512396", "birth_date": "1985-07-14", "birth_rank": 1,
                        "last_name": "Martin", "first_name": "Claire"},
        "amc": {"insurer_number": "801234567", "convention_type": "TP", "routing_criterion": "",
                "member_number": "A123456", "valid_from": f"{today.year}-01-01",
                "valid_to": f"{today.year}-12-31"},
        "lines": [{"code": "PH7", "product": "3400935955838", "quantity": 1,
                   "unit_price_cents": 800, "base_cents": 800, "amo_cents": 520,
                   "amc_cents": 280}],
    }
