"""Synthetic people and claims: valid checksums, nobody real.

Every test that scans for leaks looks for these exact values.
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime
from typing import Any


def nir_with_key(first13: str) -> str:
    """Append the NIR key (97 - N mod 97, Corsica 2A -> 19, 2B -> 18)."""
    digits = first13.replace("2A", "19").replace("2B", "18")
    return f"{first13}{97 - int(digits) % 97:02d}"


PEOPLE = [
    {"nir": "185077511512396", "birth_date": "1985-07-14", "birth_rank": 1,
     "last_name": "Martin", "first_name": "Claire"},
    {"nir": "255081416802538", "birth_date": "1955-08-21", "birth_rank": 1,
     "last_name": "Lefèvre-Øster", "first_name": "Zoë"},
    {"nir": "253072B07300470", "birth_date": "1953-07-02", "birth_rank": 2,
     "last_name": "Santucci", "first_name": "Ghjuvanni"},
]
FINESS = "330001231"
OTHER_FINESS = "690000880"


def today() -> date:
    return datetime.now(UTC).date()


def claim_body(
    invoice_number: str = "000123", *, person: int = 0, finess: str = FINESS,
    insurer_number: str = "801234567", member_number: str = "A123456", **overrides: Any,
) -> dict[str, Any]:
    day = today()
    body: dict[str, Any] = {
        "invoice_number": invoice_number,
        "service_date": day.isoformat(),
        "dispenser": {"finess": finess},
        "prescriber": {"rpps": "10001234565"},
        "beneficiary": copy.deepcopy(PEOPLE[person]),
        "amc": {
            "insurer_number": insurer_number, "convention_type": "TP",
            "routing_criterion": "", "member_number": member_number,
            "valid_from": f"{day.year - 1}-01-01", "valid_to": f"{day.year + 1}-12-31",
        },
        "lines": [
            {"code": "PH7", "product": "3400935955838", "quantity": 1,
             "unit_price_cents": 800, "base_cents": 800, "amo_cents": 520, "amc_cents": 280},
        ],
    }
    body.update(overrides)
    return body


def rights_body(*, person: int = 0, insurer_number: str = "801234567") -> dict[str, Any]:
    claim = claim_body(person=person, insurer_number=insurer_number)
    return {"beneficiary": claim["beneficiary"], "amc": claim["amc"], "date": today().isoformat()}
