"""Rights check schemas (docs/integration.md, "Rights checks")."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.claims.schemas import AmcCard, Beneficiary, IsoDate


class RightsCheck(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [{
                "beneficiary": {
                    "nir": "185077511512396", "birth_date": "1985-07-14", "birth_rank": 1,
                    "last_name": "Martin", "first_name": "Claire",
                },
                "amc": {
                    "insurer_number": "801234567", "convention_type": "TP",
                    "routing_criterion": "", "member_number": "A123456",
                    "valid_from": "2026-01-01", "valid_to": "2026-12-31",
                },
                "date": "2026-11-28",
            }]
        },
    )

    beneficiary: Beneficiary
    amc: AmcCard
    on: IsoDate = Field(alias="date")


class RightsPublic(BaseModel):
    covered: bool | None
    source: Literal["operator", "cache"] | None
    as_of: datetime | None
    valid_to: date | None
    guarantees: dict[str, int]
