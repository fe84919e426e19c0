"""Claim schemas by direction: what software sends (`ClaimCreate`) and what it gets back."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from gateway.domain.identifiers import (
    check_birth_date_against_nir,
    check_cip13,
    check_finess,
    check_insurer_number,
    check_nir,
    check_rpps,
)

MAX_CENTS = 100_000_000  # one million euros: far above any pharmacy line



def _iso_date_string(value: object) -> object:
    """Dates arrive as ISO 8601 strings only (no timestamps, no numbers)."""
    if not isinstance(value, str | date):
        raise ValueError("expected an ISO 8601 date such as 2026-11-28")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date_string)]
Cents = Annotated[int, Strict(), Field(ge=0, le=MAX_CENTS)]
Nir = Annotated[str, AfterValidator(check_nir)]
Finess = Annotated[str, AfterValidator(check_finess)]
Rpps = Annotated[str, AfterValidator(check_rpps)]
Cip13 = Annotated[str, AfterValidator(check_cip13)]
InsurerNumber = Annotated[str, AfterValidator(check_insurer_number)]
PersonName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100,
                      pattern=r"^[^\x00-\x1f\x7f0-9]+$"),
]
Code = Annotated[str, StringConstraints(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9-]+$")]
OptionalCode = Annotated[str, StringConstraints(max_length=20, pattern=r"^[A-Za-z0-9-]*$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Dispenser(_In):
    finess: Finess


class Prescriber(_In):
    rpps: Rpps


class Beneficiary(_In):
    nir: Nir
    birth_date: IsoDate
    birth_rank: Annotated[int, Strict(), Field(ge=1, le=9)]
    last_name: PersonName
    first_name: PersonName

    @field_validator("birth_date")
    @classmethod
    def _birth_date_fits_the_nir(cls, birth: date, info: ValidationInfo) -> date:
        """Named `beneficiary.birth_date`; skipped when the NIR itself was refused."""
        nir = info.data.get("nir")
        return check_birth_date_against_nir(nir, birth) if nir else birth

    @property
    def index_parts(self) -> tuple[str, ...]:
        """What the keyed beneficiary hash (`Cipher.index`) is made of: a child on a
        parent's NIR is told apart by birth date and rank, as on the Vitale card."""
        return ("beneficiary", self.nir, self.birth_date.isoformat(), str(self.birth_rank))


class AmcCard(_In):
    insurer_number: InsurerNumber
    convention_type: OptionalCode = ""
    routing_criterion: OptionalCode = ""
    member_number: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=30,
                               pattern=r"^[A-Za-z0-9-]+$")
    ]
    valid_from: IsoDate
    valid_to: IsoDate


class ClaimLine(_In):
    code: Annotated[str, StringConstraints(min_length=1, max_length=4, pattern=r"^[A-Z0-9]+$")]
    product: Cip13
    quantity: Annotated[int, Strict(), Field(ge=1, le=999)]
    unit_price_cents: Cents
    base_cents: Cents
    amo_cents: Cents
    amc_cents: Cents


class ClaimCreate(_In):
    invoice_number: Annotated[
        str, StringConstraints(min_length=1, max_length=20, pattern=r"^[A-Za-z0-9-]+$")
    ]
    service_date: IsoDate
    dispenser: Dispenser
    prescriber: Prescriber
    beneficiary: Beneficiary
    amc: AmcCard
    lines: list[ClaimLine] = Field(min_length=1, max_length=99)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "invoice_number": "000123",
                    "service_date": "2026-11-28",
                    "dispenser": {"finess": "330001231"},
                    "prescriber": {"rpps": "10001234565"},
                    "beneficiary": {
                        "nir": "185077511512396", "birth_date": "1985-07-14", "birth_rank": 1,
                        "last_name": "Martin", "first_name": "Claire",
                    },
                    "amc": {
                        "insurer_number": "801234567", "convention_type": "TP",
                        "routing_criterion": "", "member_number": "A123456",
                        "valid_from": "2026-01-01", "valid_to": "2026-12-31",
                    },
                    "lines": [
                        {"code": "PH7", "product": "3400935955838", "quantity": 1,
                         "unit_price_cents": 800, "base_cents": 800, "amo_cents": 520,
                         "amc_cents": 280}
                    ],
                }
            ]
        },
    )

    @property
    def amc_requested_cents(self) -> int:
        return sum(line.amc_cents for line in self.lines)


ClaimStatus = Literal["pending", "accepted", "rejected", "queued", "cancelled", "failed",
                      "exported"]


class Rejection(BaseModel):
    code: str
    label: str


class Coverage(BaseModel):
    decision: Literal["provisional", "refused", "not_needed"]
    reason: str | None = None
    receipt: dict[str, object] | None = None


class HistoryItem(BaseModel):
    status: str
    at: datetime
    detail: str | None = None


class ClaimPublic(BaseModel):
    """A claim as software sees it: no personal data but the masked NIR."""

    id: str
    status: ClaimStatus
    operator: str
    invoice_number: str
    service_date: date
    insurer_number: str
    nir_masked: str
    amc_requested_cents: int
    amc_covered_cents: int | None
    rejection: Rejection | None
    operator_reference: str | None
    cancellation_pending: bool
    coverage: Coverage
    created_at: datetime
    updated_at: datetime


class ClaimDetail(ClaimPublic):
    """A claim with its history, oldest step first."""

    history: list[HistoryItem]


class ClaimPage(BaseModel):
    claims: list[ClaimPublic]
    next: str | None
