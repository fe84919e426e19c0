"""Rules across fields of a claim, each naming the field it judges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.claims.schemas import ClaimCreate
from gateway.errors import ValidationFailed

# A service date may be "tomorrow" in a time zone ahead of UTC (French overseas).
SERVICE_DATE_SLACK = timedelta(days=1)


def claim_rule_errors(claim: ClaimCreate) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    today = datetime.now(UTC).date()
    if claim.amc.valid_from > claim.amc.valid_to:
        errors.append({"field": "amc.valid_to", "message": "must not be before amc.valid_from"})
    if claim.service_date > today + SERVICE_DATE_SLACK:
        errors.append({"field": "service_date", "message": "must not be in the future"})
    if claim.beneficiary.birth_date > today:
        errors.append({"field": "beneficiary.birth_date", "message": "must not be in the future"})
    elif claim.service_date < claim.beneficiary.birth_date:
        errors.append({"field": "service_date", "message": "must not be before the birth date"})
    for index, line in enumerate(claim.lines):
        if line.amo_cents > line.base_cents:
            errors.append({
                "field": f"lines[{index}].amo_cents",
                "message": "must not exceed base_cents",
            })
        elif line.amc_cents > line.base_cents - line.amo_cents:
            errors.append({
                "field": f"lines[{index}].amc_cents",
                "message": "must not exceed base_cents - amo_cents (the ticket modérateur)",
            })
    return errors


def check_claim_rules(claim: ClaimCreate) -> None:
    if errors := claim_rule_errors(claim):
        fields = ", ".join(error["field"] for error in errors)
        raise ValidationFailed(f"invalid fields: {fields}", errors=errors)
