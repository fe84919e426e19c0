"""The person and the AMC card, read from a contained Patient and Coverage: shared by a
Claim and a CoverageEligibilityRequest (docs/fhir.md, "Mapping")."""

from __future__ import annotations

from typing import Any

from gateway.fhir import systems
from gateway.fhir.reading import Reader

CARD_CLASSES = {"convention-type": "amc.convention_type",
                "routing-criterion": "amc.routing_criterion"}


def read_patient(reader: Reader, reference: Any, path: str) -> dict[str, Any]:
    """`beneficiary`: NIR (INS-NIR system), birth date, birth rank, names."""
    found = reader.resolve(reference, path, "Patient")
    if found is None:
        return {}
    where, patient = found
    reader.take("beneficiary", where, None)
    person: dict[str, Any] = {
        "nir": reader.identifier("beneficiary.nir", where, patient.identifier,
                                 systems.NIR_SYSTEMS),
        "birth_date": reader.day("beneficiary.birth_date", f"{where}.birthDate",
                                 patient.birthDate),
        "birth_rank": reader.take("beneficiary.birth_rank", f"{where}.multipleBirthInteger",
                                  patient.multipleBirthInteger),
    }
    if person["birth_rank"] is None:
        reader.fail(f"{where}.multipleBirthInteger", "the birth rank (1 to 9) is required")
    names = patient.name or []
    chosen = next((i for i, n in enumerate(names) if n.use == "official"), 0)
    if not names:
        reader.fail(f"{where}.name", "the family and given names are required")
        return person
    name, name_path = names[chosen], f"{where}.name[{chosen}]"
    person["last_name"] = reader.take("beneficiary.last_name", f"{name_path}.family",
                                      name.family)
    person["first_name"] = reader.take("beneficiary.first_name", f"{name_path}.given[0]",
                                       (name.given or [None])[0])
    return person


def read_coverage(reader: Reader, reference: Any, path: str, patient: Any) -> dict[str, Any]:
    """`amc`: the card's insurer number (payor), member number, validity and routing."""
    found = reader.resolve(reference, path, "Coverage")
    if found is None:
        return {}
    where, coverage = found
    reader.take("amc", where, None)
    if getattr(coverage.beneficiary, "reference", None) != getattr(patient, "reference", None):
        reader.fail(f"{where}.beneficiary", "must be the claim's patient", "value")
    card: dict[str, Any] = {"convention_type": "", "routing_criterion": ""}
    payors = coverage.payor or []
    card["insurer_number"] = (
        reader.identifier("amc.insurer_number", f"{where}.payor[0]",
                          [payors[0].identifier] if payors[0].identifier else [],
                          [systems.AMC_INSURER]) if payors else None)
    if not payors:
        reader.fail(f"{where}.payor", "the AMC insurer (identifier) is required")
    card["member_number"] = reader.take("amc.member_number", f"{where}.subscriberId",
                                        coverage.subscriberId)
    period = coverage.period
    card["valid_from"] = reader.day("amc.valid_from", f"{where}.period.start",
                                    period.start if period else None)
    card["valid_to"] = reader.day("amc.valid_to", f"{where}.period.end",
                                  period.end if period else None)
    for index, item in enumerate(coverage.class_fhir or []):
        codes = [c.code for c in (item.type.coding or []) if c.system == systems.CARD_FIELD]
        field = CARD_CLASSES.get(codes[0]) if codes else None
        if field:
            card[field.split(".")[1]] = reader.take(field, f"{where}.class[{index}].value",
                                                    item.value)
    return card
