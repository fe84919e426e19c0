"""docs/fhir.md: every JSON example is a resource the model library parses, the request
examples read as the REST bodies they stand for, and every URI the face uses is written
down there."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from gateway.fhir import examples as openapi_examples
from gateway.fhir import systems
from gateway.fhir.claims import read_claim
from gateway.fhir.eligibility import read_eligibility

DOC = Path(__file__).parents[2] / "docs" / "fhir.md"
BLOCKS = re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def examples() -> list[dict[str, Any]]:
    return [json.loads(block) for block in BLOCKS]


def test_the_page_has_an_example_of_each_resource_it_describes():
    kinds = sorted(example["resourceType"] for example in examples())
    assert kinds == ["CapabilityStatement", "Claim", "ClaimResponse",
                     "CoverageEligibilityRequest", "CoverageEligibilityResponse",
                     "OperationOutcome"]


@pytest.mark.parametrize("example", examples(), ids=lambda e: e["resourceType"])
def test_every_example_is_parsed_by_the_model_library(example):
    model = get_fhir_model_class(example["resourceType"])
    parsed = model.model_validate(example)
    assert parsed.get_resource_type() == example["resourceType"]


def test_the_request_examples_read_as_rest_bodies():
    found = {e["resourceType"]: e for e in examples()}
    claim_in, _ = read_claim(get_fhir_model_class("Claim").model_validate(found["Claim"]))
    assert (claim_in.invoice_number, claim_in.lines[0].amc_cents) == ("D261129025120", 280)
    assert claim_in.amc.convention_type == "TP"
    check, _ = read_eligibility(get_fhir_model_class("CoverageEligibilityRequest")
                                .model_validate(found["CoverageEligibilityRequest"]))
    assert check.beneficiary.nir == "185077511512396"


def test_every_system_the_face_uses_is_written_down():
    text = DOC.read_text(encoding="utf-8")
    uris = {name: value for name, value in vars(systems).items()
            if name.isupper() and isinstance(value, str) and value.startswith(("http", "urn"))}
    missing = {name: value for name, value in uris.items() if value not in text}
    assert not missing, missing


def test_the_openapi_examples_are_the_pages():
    found = {e["resourceType"]: e for e in examples()}
    assert openapi_examples.CLAIM == found["Claim"]
    assert openapi_examples.ELIGIBILITY_REQUEST == found["CoverageEligibilityRequest"]
