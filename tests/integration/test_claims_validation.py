"""Every input rule of CONTRACT.md 3.1: a 4xx problem+json naming the field, nothing stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from synthetic import claim_body, nir_with_key

pytestmark = pytest.mark.anyio


def mutate(path: str, value: Any) -> dict[str, Any]:
    """A valid claim with one value replaced (`lines[0].amc_cents`), or removed (value=...)."""
    body = claim_body("V1")
    target: Any = body
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    last = parts[-1]
    if value is ...:
        del target[last]
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return body


BAD_FIELDS = [
    ("beneficiary.nir", "185077511512397"),            # wrong key
    ("beneficiary.nir", "18507751151239"),             # too short
    ("beneficiary.nir", "2530722B0730047"),            # Corsica misplaced
    ("beneficiary.nir", ""),
    ("beneficiary.nir", 185077511512396),              # a number, not a string
    ("lines[0].product", "3400935955839"),             # EAN-13 check digit
    ("lines[0].product", "340093595583"),
    ("dispenser.finess", "33000123"),
    ("dispenser.finess", "3300012X1"),
    ("prescriber.rpps", "20001234565"),
    ("prescriber.rpps", "1000123456"),
    ("lines[0].quantity", 0),
    ("lines[0].quantity", "1"),
    ("lines[0].quantity", 1.5),
    ("lines[0].quantity", True),
    ("lines[0].unit_price_cents", -1),
    ("lines[0].amo_cents", -5),
    ("lines[0].amc_cents", 10**30),
    ("lines[0].base_cents", 8.0),
    ("beneficiary.birth_rank", 0),
    ("beneficiary.birth_rank", 10),
    ("beneficiary.birth_date", "14/07/1985"),
    ("beneficiary.birth_date", 0),
    ("beneficiary.last_name", ""),
    ("beneficiary.last_name", "   "),
    ("beneficiary.first_name", "Cla\x07ire"),
    ("beneficiary.first_name", "x" * 101),
    ("service_date", "2026-02-30"),
    ("amc.insurer_number", "1234567"),
    ("amc.insurer_number", "80123456A"),
    ("amc.member_number", ""),
    ("invoice_number", ""),
    ("invoice_number", "x" * 21),
    ("invoice_number", "a/b"),
    ("lines[0].code", "ph7"),
    ("lines", []),
    ("lines", [claim_body()["lines"][0]] * 100),
    ("beneficiary", ...),
    ("lines[0].amc_cents", ...),
    ("prescriber", None),
]


@pytest.mark.parametrize(("path", "value"), BAD_FIELDS)
async def test_each_bad_field_is_named(client, pharmacy, path, value):
    response = await client.post("/v1/claims", json=mutate(path, value), headers=pharmacy)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "validation-error"
    fields = [error["field"] for error in problem["errors"]]
    expected = path if value is not ... or "." in path else path
    assert expected in fields
    if isinstance(value, str) and len(value) > 3:
        assert value not in response.text  # never echo what was submitted
    assert (await client.get("/v1/claims", headers=pharmacy)).json()["claims"] == []


CROSS_FIELD = [
    ({"lines[0].amc_cents": 281}, "lines[0].amc_cents"),        # over base - amo
    ({"lines[0].amo_cents": 900}, "lines[0].amo_cents"),        # over base
    ({"amc.valid_from": "2030-01-01", "amc.valid_to": "2029-01-01"}, "amc.valid_to"),
    ({"service_date": "2099-01-01"}, "service_date"),
    ({"beneficiary.birth_date": "2099-01-01"}, "beneficiary.birth_date"),
]


@pytest.mark.parametrize(("changes", "field"), CROSS_FIELD)
async def test_rules_across_fields_name_the_field_they_judge(client, pharmacy, changes, field):
    body = claim_body("V2")
    for path, value in changes.items():
        body = mutate_body(body, path, value)
    response = await client.post("/v1/claims", json=body, headers=pharmacy)
    assert response.status_code == 422
    assert field in [error["field"] for error in response.json()["errors"]]


def mutate_body(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    target: Any = body
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else target[part]
    target[parts[-1]] = value
    return body


async def test_all_bad_fields_are_reported_together(client, pharmacy):
    body = mutate("beneficiary.nir", "185077511512397")
    body["lines"][0]["product"] = "3400935955839"
    response = await client.post("/v1/claims", json=body, headers=pharmacy)
    fields = {error["field"] for error in response.json()["errors"]}
    assert {"beneficiary.nir", "lines[0].product"} <= fields


@pytest.mark.parametrize(("nir", "birth_date"), [
    ("185077511512396", "1985-07-14"), ("253072B07300470", "1953-07-02"),
    (nir_with_key("253072A073004"), "1953-07-31"),
    (nir_with_key("2991299999999"), "1999-12-31"), ("1 85 07 75 115 123 96", "1985-07-01"),
    # months 20-42 and 50+ (no known month in the civil record): the birth date is not checked
    (nir_with_key("1853075115123"), "1985-07-14"), (nir_with_key("1859975115123"), "1984-01-02"),
])
async def test_valid_nirs_including_corsica_and_odd_months_pass(client, pharmacy, nir,
                                                                birth_date):
    body = mutate("beneficiary.nir", nir)
    body["beneficiary"]["birth_date"] = birth_date
    response = await client.post("/v1/claims", json=body, headers=pharmacy)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("birth_date", ["1986-07-14", "1985-08-14", "2085-06-30"])
async def test_a_birth_date_the_nir_contradicts_is_422_naming_it(client, pharmacy, birth_date):
    """The NIR 1 85 07 ... says born in July 1985 (year 85, month 07)."""
    response = await client.post("/v1/claims", json=mutate("beneficiary.birth_date",
                                                           birth_date), headers=pharmacy)
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "beneficiary.birth_date", "message":
                                          "the birth year and month do not match the NIR's"}]
    assert birth_date not in response.text
    assert (await client.get("/v1/claims", headers=pharmacy)).json()["claims"] == []


async def test_unicode_names_are_accepted(client, pharmacy):
    body = claim_body("V3")
    body["beneficiary"]["last_name"] = "N'Diaye-Łukasiewicz"
    body["beneficiary"]["first_name"] = "Zoë Hélène"
    assert (await client.post("/v1/claims", json=body, headers=pharmacy)).status_code == 201


async def test_unknown_fields_are_refused(client, pharmacy):
    body = claim_body("V4")
    body["beneficiary"]["email"] = "claire@example.org"
    response = await client.post("/v1/claims", json=body, headers=pharmacy)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "beneficiary.email"


@pytest.mark.parametrize("raw", [b"{", b"not json", b"[]", b"null", b'"x"', b"\xff\xfe",
                                 b'{"invoice_number": 1e999}'])
async def test_malformed_bodies_are_422_not_500(client, pharmacy, raw):
    response = await client.post("/v1/claims", content=raw,
                                 headers={**pharmacy, "Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_bodies_over_64_kib_are_413(client, pharmacy):
    body = json.dumps(claim_body("V5")) + " " * (65 * 1024)
    response = await client.post("/v1/claims", content=body,
                                 headers={**pharmacy, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["type"] == "payload-too-large"


async def test_chunked_bodies_over_64_kib_are_413(client, pharmacy):
    async def chunks():
        for _ in range(70):
            yield b" " * 1024

    response = await client.post("/v1/claims", content=chunks(),
                                 headers={**pharmacy, "Content-Type": "application/json"})
    assert response.status_code == 413


async def test_a_too_long_idempotency_key_is_422(client, pharmacy):
    response = await client.post("/v1/claims", json=claim_body("V6"),
                                 headers={**pharmacy, "Idempotency-Key": "k" * 300})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "Idempotency-Key"


@pytest.mark.parametrize("name", ["query", "body", "header"])
async def test_an_unknown_field_is_named_even_when_called_like_a_location(client, pharmacy,
                                                                         name):
    response = await client.post("/v1/claims", json={**claim_body("UF1"), name: "x"},
                                 headers=pharmacy)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [name]
