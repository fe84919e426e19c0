"""Synthetic claims and rights requests shaped like CONTRACT.md section 3.1's example.

Named `adapter_samples` (not `samples`) because tests/ folders have no `__init__.py`:
pytest imports helpers by their bare name, so a unique name avoids collisions.
"""

from __future__ import annotations

import copy
from typing import Any

from adapters.base import OperatorClaim, RightsRequest

NIR = "185077511512396"
LAST_NAME = "Martin"

_CLAIM: dict[str, Any] = {
    "invoice_number": "000123",
    "service_date": "2026-11-28",
    "dispenser": {"finess": "330001231"},
    "prescriber": {"rpps": "10001234565"},
    "beneficiary": {
        "nir": NIR,
        "birth_date": "1985-07-14",
        "birth_rank": 1,
        "last_name": LAST_NAME,
        "first_name": "Claire",
    },
    "amc": {
        "insurer_number": "801234567",
        "convention_type": "TP",
        "routing_criterion": "",
        "member_number": "A123456",
        "valid_from": "2026-01-01",
        "valid_to": "2026-12-31",
    },
    "lines": [
        {"code": "PH7", "product": "3400935955838", "quantity": 1,
         "unit_price_cents": 800, "base_cents": 800, "amo_cents": 520, "amc_cents": 280},
    ],
}

SECOND_LINE: dict[str, Any] = {
    "code": "PH4", "product": "3400930000014", "quantity": 2,
    "unit_price_cents": 250, "base_cents": 500, "amo_cents": 150, "amc_cents": 150,
}


def claim_body(
    claim_id: str = "clm_01JTEST0000000000000000001",
    *,
    member_number: str = "A123456",
    service_date: str = "2026-11-28",
    extra_lines: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The 3.1 example plus `claim_id`, with the few fields the simulator's rules read."""
    body = copy.deepcopy(_CLAIM)
    body["claim_id"] = claim_id
    body["amc"]["member_number"] = member_number
    body["service_date"] = service_date
    body["lines"].extend(copy.deepcopy(extra_lines or []))
    return body


def operator_claim(key: str = "clm_01JTEST0000000000000000001", **kwargs: Any) -> OperatorClaim:
    """A claim as an adapter sends it: the idempotency key is the public claim id."""
    return OperatorClaim(idempotency_key=key, body=claim_body(key, **kwargs))


def rights_request(member_number: str = "A123456") -> RightsRequest:
    """A rights check for the example's beneficiary on its service date."""
    body = copy.deepcopy({k: _CLAIM[k] for k in ("beneficiary", "amc")})
    body["amc"]["member_number"] = member_number
    body["date"] = "2026-11-28"
    return RightsRequest(body=body)
