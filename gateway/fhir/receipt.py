"""A claim's coverage decision and provisional receipt as one ClaimResponse extension.

`{CANONICAL}/StructureDefinition/provisional-receipt`, with sub-extensions named as in
docs/fhir.md, "The provisional receipt": the decision always, the receipt's figures, its
verify URL and its signed token (the same compact JWS as the REST answer's) when granted.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gateway.claims.schemas import Coverage
from gateway.fhir.systems import RECEIPT

EUR = "EUR"


def money(cents: int) -> dict[str, Any]:
    """Integer cents as FHIR Money (a decimal in euros, exact)."""
    return {"value": Decimal(cents).scaleb(-2), "currency": EUR}


def receipt_extension(coverage: Coverage) -> dict[str, Any] | None:
    """None when no decision was needed (the operator answered in time)."""
    if coverage.decision == "not_needed":
        return None
    parts: list[dict[str, Any]] = [{"url": "decision", "valueCode": coverage.decision}]
    if coverage.reason:
        parts.append({"url": "reason", "valueString": coverage.reason})
    receipt = coverage.receipt
    if receipt:
        parts += [
            {"url": "receiptId", "valueString": str(receipt["id"])},
            {"url": "status", "valueCode": str(receipt["status"])},
            {"url": "amcAmount", "valueMoney": money(int(str(receipt["amc_cents"])))},
            {"url": "patientDue", "valueMoney": money(int(str(receipt["patient_due_cents"])))},
            {"url": "basis", "valueCode": str(receipt["basis"])},
            {"url": "expires", "valueDateTime": str(receipt["expires_at"])},
            {"url": "verifyUrl", "valueUrl": str(receipt["verify_url"])},
            {"url": "printUrl", "valueUrl": str(receipt["print_url"])},
            {"url": "token", "valueString": str(receipt["token"])},
        ]
    return {"url": RECEIPT, "extension": parts}
