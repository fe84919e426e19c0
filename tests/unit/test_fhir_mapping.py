"""The FHIR face's reading and writing, without HTTP: a Claim read as the ClaimCreate it
stands for, amounts to exact cents, every fault named by its FHIRPath, and bodies mutated
at random never escaping as anything but a 400 or 422 (docs/fhir.md)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any, get_args

import pytest
from fhir.resources.R4B.claim import Claim
from fhir_samples import fhir_claim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from synthetic import claim_body

from gateway.claims.schemas import ClaimCreate, ClaimPublic, ClaimStatus, Coverage
from gateway.errors import GatewayError
from gateway.fhir import systems
from gateway.fhir.claims import claim_id_of, claim_response, fhir_id, read_claim
from gateway.fhir.parsing import BadResource, UnsupportedMediaType, parse_resource

FHIR = "application/fhir+json"


def parsed(resource: dict[str, Any]) -> Claim:
    return parse_resource(json.dumps(resource).encode(), FHIR, Claim)


def refusal(resource: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        read_claim(parsed(resource))
    return caught.value


def test_a_fhir_claim_reads_as_the_rest_body_it_stands_for():
    body = claim_body("U1", person=2)  # Corsican NIR, birth rank 2
    body["amc"]["routing_criterion"] = "R2"
    claim_in, _ = read_claim(parsed(fhir_claim(body)))
    assert claim_in == ClaimCreate.model_validate(body)
    assert claim_in.model_dump(mode="json") == ClaimCreate.model_validate(body).model_dump(
        mode="json")


@pytest.mark.parametrize(("value", "cents"), [(8, 800), (8.0, 800), (2.8, 280), (0.07, 7),
                                              (1234.56, 123456)])
def test_money_becomes_exact_integer_cents(value, cents):
    resource = fhir_claim(claim_body("U2"))
    resource["item"][0]["unitPrice"]["value"] = value
    claim_in, _ = read_claim(parsed(resource))
    assert claim_in.lines[0].unit_price_cents == cents
    assert isinstance(claim_in.lines[0].unit_price_cents, int)


def test_a_sub_cent_amount_or_another_currency_is_refused_naming_the_element():
    resource = fhir_claim(claim_body("U3"))
    resource["item"][0]["unitPrice"]["value"] = 8.005
    resource["item"][0]["extension"][1]["valueMoney"]["currency"] = "USD"
    error = refusal(resource)
    assert error.status == 422
    assert {e["field"] for e in error.errors or []} == {
        "Claim.item[0].unitPrice.value", "Claim.item[0].extension[1].valueMoney.currency"}


def test_our_schemas_errors_name_the_fhir_element_they_came_from():
    body = claim_body("U4")
    body["beneficiary"]["nir"] = body["beneficiary"]["nir"][:-2] + "00"  # a wrong key
    body["lines"][0]["product"] = "3400935955839"  # a wrong EAN check digit
    body["prescriber"]["rpps"] = "2000123456"  # not 11 digits starting with 1
    error = refusal(fhir_claim(body))
    fields = {e["field"] for e in error.errors or []}
    assert fields == {"Claim.contained[0].identifier[0].value",
                      "Claim.item[0].productOrService.coding[0].code",
                      "Claim.contained[2].identifier[0].value"}
    assert body["beneficiary"]["nir"] not in json.dumps(error.errors)


def test_missing_pieces_are_named():
    resource = fhir_claim(claim_body("U5"))
    resource["contained"][0]["identifier"][0]["system"] = "urn:oid:1.2.250.1.213.1.4.9"  # NIA
    del resource["careTeam"]
    resource["provider"] = {"reference": "#nobody"}
    resource["item"][0]["extension"].pop()
    error = refusal(resource)
    assert {e["field"] for e in error.errors or []} == {
        "Claim.contained[0].identifier", "Claim.careTeam", "Claim.provider.reference",
        "Claim.item[0].extension"}


def test_a_claim_without_items_is_refused_naming_them():
    resource = fhir_claim(claim_body("U7"))
    resource["item"] = []
    assert [e["field"] for e in refusal(resource).errors or []] == ["Claim.item"]


def test_a_modifier_extension_anywhere_is_refused_naming_it():
    resource = fhir_claim(claim_body("U8"))
    modifier = [{"url": "https://example.org/no-substitution", "valueBoolean": True}]
    resource["item"][0]["modifierExtension"] = modifier
    resource["contained"][0]["modifierExtension"] = modifier
    with pytest.raises(GatewayError) as caught:
        parsed(resource)
    assert caught.value.status == 422
    assert [e["field"] for e in caught.value.errors or []] == [
        "Claim.contained[0].modifierExtension", "Claim.item[0].modifierExtension"]


def test_a_test_identity_nir_system_is_accepted():
    resource = fhir_claim(claim_body("U6"))
    resource["contained"][0]["identifier"][0]["system"] = systems.INS_NIR_TEST
    claim_in, _ = read_claim(parsed(resource))
    assert claim_in.beneficiary.nir == claim_body()["beneficiary"]["nir"]


@pytest.mark.parametrize("element", ["unitPrice", "quantity"])
@pytest.mark.parametrize("raw", ['"1E999999"', "1E999999", "-1E400000", '"1E-999999999"',
                                 "8.0000000000000000000000000001", "1000000000000"])
def test_an_absurd_number_or_one_finer_than_a_cent_is_refused_naming_it(element, raw):
    # a FHIR decimal may come as a string: "1E999999" overflowed the cents (a 500), and as a
    # quantity held the event loop for seconds; 28 digits of context rounded the fourth
    resource = fhir_claim(claim_body("U4"))
    resource["item"][0][element]["value"] = "RAW"
    body = json.dumps(resource).replace('"RAW"', raw).encode()
    with pytest.raises(GatewayError) as caught:
        read_claim(parse_resource(body, FHIR, Claim))
    assert caught.value.status == 422
    assert f"Claim.item[0].{element}.value" in {e["field"] for e in caught.value.errors or []}


@pytest.mark.parametrize("body", [
    b'{"resourceType": "Claim", "text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"resourceType": "Claim", "item": [{"unitPrice": {"value": NaN}}]}',
    b'{"resourceType": "Claim", "item": [{"quantity": {"value": Infinity}}]}'])
def test_json_nested_too_deep_or_with_nan_is_a_400(body):
    with pytest.raises(BadResource):
        parse_resource(body, FHIR, Claim)


def test_not_json_not_a_claim_or_another_media_type():
    with pytest.raises(BadResource):
        parse_resource(b"{not json", FHIR, Claim)
    with pytest.raises(BadResource):
        parse_resource(b'{"resourceType": "Patient"}', FHIR, Claim)
    with pytest.raises(BadResource):
        parse_resource(b'"\xff"', FHIR, Claim)
    with pytest.raises(UnsupportedMediaType):
        parse_resource(b"{}", "text/plain", Claim)
    parse_resource(json.dumps(fhir_claim(claim_body())).encode(),
                   "application/json; charset=utf-8", Claim)


def _places(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every object in the resource (where an element could be added), by its path."""
    found: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        found.append(path)
        for key, value in node.items():
            found += _places(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _places(value, (*path, index))
    return found


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


SAMPLE = fhir_claim(claim_body("UH", service_date="2026-11-28"))
PLACES = _places(SAMPLE)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=4), inner,
                                                               max_size=2), max_leaves=4)
BOUNDED = settings(max_examples=40, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])


def _expected_path(path: tuple[Any, ...]) -> str:
    return "Claim" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


@BOUNDED
@given(place=st.sampled_from(PLACES),
       name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8),
       value=JSON_VALUES)
def test_an_unknown_element_anywhere_is_a_400_naming_it(place, name, value):
    resource = copy.deepcopy(SAMPLE)
    _at(resource, place)[f"zz{name}"] = value
    with pytest.raises(BadResource) as caught:
        parsed(resource)
    fields = [e["field"] for e in caught.value.errors or []]
    assert _expected_path((*place, f"zz{name}")) in fields


@BOUNDED
@given(place=st.sampled_from([p for p in PLACES if p]), value=JSON_VALUES)
def test_any_element_replaced_by_anything_is_a_400_or_422_never_worse(place, value):
    resource = copy.deepcopy(SAMPLE)
    *parent, last = place
    _at(resource, tuple(parent))[last] = value
    try:
        read_claim(parsed(resource))
    except GatewayError as error:
        assert error.status in (400, 422), error
        assert all(e["field"].startswith("Claim") for e in error.errors or [])


def _public(status: str, **extra: Any) -> ClaimPublic:
    now = datetime.now(UTC)
    return ClaimPublic.model_validate({
        "id": "clm_01ABCDEFGHJKMNPQRSTVWXYZ00", "status": status, "operator": "opera",
        "invoice_number": "INV1", "service_date": now.date(), "insurer_number": "801234567",
        "nir_masked": "18507**********", "amc_requested_cents": 280,
        "amc_covered_cents": None, "rejection": None, "operator_reference": None,
        "cancellation_pending": False, "coverage": Coverage(decision="not_needed"),
        "created_at": now, "updated_at": now, **extra})


OUTCOME_OF = {"pending": "queued", "queued": "queued", "exported": "queued",
              "accepted": "complete", "rejected": "error", "cancelled": "complete",
              "failed": "error"}


def test_every_claim_status_is_mapped():
    assert set(OUTCOME_OF) == set(get_args(ClaimStatus))


@pytest.mark.parametrize(("status", "outcome"), OUTCOME_OF.items())
def test_each_status_has_its_outcome(status, outcome):
    extra = {"rejection": {"code": "R01", "label": "inconnu"}} if status == "rejected" else {}
    response = claim_response(_public(status, **extra))
    assert response.outcome == outcome
    assert (response.status == "cancelled") == (status == "cancelled")
    assert bool(response.error) == (status in ("rejected", "failed"))


def test_claim_ids_and_fhir_ids_map_both_ways():
    claim_id = "clm_01ABCDEFGHJKMNPQRSTVWXYZ00"
    assert fhir_id(claim_id) == "clm-01ABCDEFGHJKMNPQRSTVWXYZ00"
    assert claim_id_of(fhir_id(claim_id)) == claim_id


def _elements(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every element and array entry of the resource, by its path."""
    found: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(
        node, list) else []
    for key, value in items:
        found += [(*path, key), *_elements(value, (*path, key))]
    return found


def test_any_one_element_left_out_is_a_400_or_422_never_worse():
    for place in _elements(SAMPLE):
        resource = copy.deepcopy(SAMPLE)
        *parent, last = place
        del _at(resource, tuple(parent))[last]
        try:
            read_claim(parsed(resource))
        except GatewayError as error:
            assert error.status in (400, 422), (place, error)
