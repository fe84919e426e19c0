"""Reading our fields out of a validated FHIR resource, remembering the FHIRPath each came
from, so that any error our own schemas or services raise names the FHIR element."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from gateway.errors import GatewayError, ValidationFailed, validation_errors

CURRENCY = "EUR"
MAX_MAGNITUDE = 9  # 10^9 units: far beyond any amount or quantity of a claim


def scaled(value: Any, places: int) -> int | None:
    """`value` x 10^places as an int when that is exact and of a sane size, else None.

    Read off the decimal's digits, never by arithmetic: the default 28-digit context
    would round 8.00000000000000000000000000001 to 8, and a FHIR decimal may arrive as
    a string such as "1E999999", whose product overflows (a 500) or, as a quantity, took
    seconds of the event loop to compare."""
    try:
        number = Decimal(value)
    except (ArithmeticError, TypeError, ValueError):
        return None
    if not number.is_finite():
        return None
    if number.is_zero():
        return 0
    if number.adjusted() > MAX_MAGNITUDE:
        return None
    sign, digits, exponent = number.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    exponent = int(exponent) + len(digits) - len(significant)
    if exponent + places < 0:  # a part finer than 10^-places
        return None
    magnitude: int = int(significant) * 10 ** (exponent + places)
    return -magnitude if sign else magnitude


class Reader:
    """Our field path -> the FHIRPath it was read from; faults found on the way."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.sources: dict[str, str] = {}
        self.errors: list[dict[str, str]] = []
        self.contained: dict[str, tuple[str, Any]] = {}

    def fail(self, path: str, message: str, code: str = "required") -> None:
        self.errors.append({"field": path, "message": message, "code": code})

    def take(self, field: str, path: str, value: Any) -> Any:
        self.sources[field] = path
        return value

    def check(self) -> None:
        """Stop with a 422 naming every element found wrong so far."""
        if self.errors:
            fields = ", ".join(dict.fromkeys(e["field"] for e in self.errors))
            raise ValidationFailed(f"invalid elements: {fields}", errors=self.errors)

    # ------------------------------------------------------------------ references

    def index_contained(self, resources: Sequence[Any] | None) -> None:
        for index, resource in enumerate(resources or []):
            if resource.id:
                self.contained[resource.id] = (f"{self.root}.contained[{index}]", resource)

    def resolve(self, reference: Any, path: str, kind: str) -> tuple[str, Any] | None:
        """A `#id` reference to a contained resource of type `kind`: its path and itself."""
        target = getattr(reference, "reference", None) if reference is not None else None
        if not target:
            self.fail(path, f"a reference to a contained {kind} (#id) is required")
            return None
        found = self.contained.get(target[1:]) if target.startswith("#") else None
        if found is None or found[1].get_resource_type() != kind:
            self.fail(f"{path}.reference", f"must point to a contained {kind} (#id)", "value")
            return None
        return found

    # ------------------------------------------------------------------ values

    def identifier(self, field: str, path: str, identifiers: Sequence[Any] | None,
                   systems: Iterable[str]) -> str | None:
        wanted = tuple(systems)
        for index, identifier in enumerate(identifiers or []):
            if identifier.system in wanted and identifier.value:
                return str(self.take(field, f"{path}.identifier[{index}].value",
                                     identifier.value))
        self.fail(f"{path}.identifier", f"an identifier with system {' or '.join(wanted)}")
        return None

    def coded(self, field: str, path: str, concept: Any, system: str) -> str | None:
        for index, coding in enumerate(getattr(concept, "coding", None) or []):
            if coding.system == system and coding.code:
                return str(self.take(field, f"{path}.coding[{index}].code", coding.code))
        self.fail(path, f"a coding with system {system}")
        return None

    def cents(self, field: str, path: str, money: Any) -> int | None:
        """Money to integer cents, exactly: a sub-cent amount or another currency is refused."""
        if money is None or money.value is None:
            self.fail(path, "an amount (Money with value and currency EUR) is required")
            return None
        if money.currency != CURRENCY:
            self.fail(f"{path}.currency", f"must be {CURRENCY}", "value")
            return None
        cents = scaled(money.value, 2)
        if cents is None:
            self.fail(f"{path}.value", "must be a whole number of cents, under 10^9", "value")
            return None
        return int(self.take(field, f"{path}.value", cents))

    def whole(self, field: str, path: str, value: Decimal | None) -> int | None:
        number = None if value is None else scaled(value, 0)
        if number is None:
            self.fail(path, "a whole number is required, under 10^9", "value")
            return None
        return int(self.take(field, path, number))

    def day(self, field: str, path: str, value: Any) -> str | None:
        if value is None:
            self.fail(path, "required")
            return None
        if isinstance(value, datetime):  # a dateTime element: its calendar day
            value = value.date()
        text = value.isoformat() if isinstance(value, date) else str(value)
        return str(self.take(field, path, text))

    # ------------------------------------------------------------------ our errors

    def where(self, field: str) -> str:
        """The FHIRPath our field came from: itself, its nearest parent read, or the root."""
        candidate = field
        while candidate:
            if candidate in self.sources:
                return self.sources[candidate]
            cut = max(candidate.rfind("."), candidate.rfind("["))
            candidate = candidate[:cut] if cut > 0 else ""
        return self.root

    def translated(self, errors: list[dict[str, str]] | None) -> list[dict[str, str]] | None:
        """Our schemas' error fields as FHIRPaths; headers (no dot, no bracket) stay named."""
        if errors is None:
            return None
        return [{**error, "field": self.where(error["field"])}
                if error.get("field", "")[:1].islower() else error for error in errors]

    def as_fhir(self, exc: GatewayError) -> GatewayError:
        exc.errors = self.translated(exc.errors)
        return exc

    def validation_failed(self, exc: ValidationError) -> ValidationFailed:
        raw: list[dict[str, Any]] = [dict(error) for error in exc.errors()]
        errors = self.translated(validation_errors(raw)) or []
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
        return ValidationFailed(f"invalid elements: {fields}", errors=errors)
