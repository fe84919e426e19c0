"""Properties of every validator (issue 6): identifiers, claim schema, claim rules, cursors.

For each identifier check: every valid value is accepted and normalised idempotently,
every other string is refused with a ValueError that never repeats it (it may be a NIR),
and an accepted value is always the canonical ASCII form. For claims: any valid claim
drawn from `claims()` validates with no rule error, and each way of breaking one rule is
refused naming exactly the field it judges.
"""

from __future__ import annotations

import base64
import json
import re
import string
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from synthetic import nir_with_key

from gateway.claims.queries import decode_cursor, encode_cursor
from gateway.claims.rules import check_claim_rules, claim_rule_errors
from gateway.claims.schemas import MAX_CENTS, ClaimCreate
from gateway.domain.identifiers import (
    check_cip13,
    check_finess,
    check_insurer_number,
    check_nir,
    check_rpps,
    finess_luhn_ok,
    rpps_luhn_ok,
)
from gateway.errors import ValidationFailed, validation_errors
from gateway.events.endpoints import decode as decode_event_cursor
from gateway.events.endpoints import encode as encode_event_cursor

MODEL = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- strategies

DIGITS = "0123456789"
NIR_FORMAT = re.compile(r"[12][0-9]{4}(?:[0-9]{2}|2A|2B)[0-9]{8}")
FINESS_ASCII = re.compile(r"(?:[0-9]{2}|2A|2B)[0-9]{7}")
RPPS_ASCII = re.compile(r"1[0-9]{10}")
INSURER_ASCII = re.compile(r"[0-9]{8,10}")
CIP_ASCII = re.compile(r"[0-9]{13}")
INVOICE_ALPHABET = string.ascii_letters + DIGITS + "-"

nir_bodies = st.builds(
    lambda sex, year, month, place, order: f"{sex}{year:02d}{month:02d}{place}{order:06d}",
    st.sampled_from("12"), st.integers(0, 99), st.integers(1, 12),
    st.one_of(st.integers(1, 99).map(lambda n: f"{n:02d}"), st.sampled_from(["2A", "2B"])),
    st.integers(0, 999999),
)
nirs = nir_bodies.map(nir_with_key)


def ean_check_digit(first12: str) -> str:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return str((10 - total % 10) % 10)


def luhn_check_digit(body: str) -> str:
    total = 0
    for index, char in enumerate(reversed(body)):
        digit = int(char) * (2 if index % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return str((10 - total % 10) % 10)


eans = st.text(DIGITS, min_size=12, max_size=12).map(lambda b: b + ean_check_digit(b))
cip13s = st.text(DIGITS, min_size=7, max_size=7).map(
    lambda b: "34009" + b + ean_check_digit("34009" + b))
finesses = st.one_of(st.text(DIGITS, min_size=9, max_size=9),
                     st.builds(lambda d, rest: d + rest, st.sampled_from(["2A", "2B"]),
                               st.text(DIGITS, min_size=7, max_size=7)))
rppses = st.text(DIGITS, min_size=10, max_size=10).map(lambda b: "1" + b)
insurers = st.text(DIGITS, min_size=8, max_size=10)
codes = st.text(string.ascii_letters + DIGITS + "-", min_size=1, max_size=20)


def with_spaces(value: str) -> st.SearchStrategy[str]:
    """The value with spaces anywhere (as on a carte Vitale: 1 85 07 75 115 123 96)."""
    return st.lists(st.integers(0, len(value)), max_size=6).map(
        lambda cuts: "".join(" " * cuts.count(i) + c for i, c in enumerate(value))
        + " " * cuts.count(len(value)))


def refused(check: Any, value: str) -> str:
    with pytest.raises(ValueError) as info:
        check(value)
    return str(info.value)


def assert_not_echoed(value: str, message: str) -> None:
    """The message never repeats the input (unless the input is a piece of the fixed text)."""
    shown = value.strip()
    if len(shown) >= 4 and shown not in FIXED_TEXT:
        assert shown not in message, "the message repeats the input"


# Every message the identifier checks give: an input may happen to be a piece of one.
FIXED_TEXT = " ".join([
    "a NIR is 15 characters: 13 digits (2A/2B allowed) and a 2-digit key",
    "the NIR's key does not match its 13 characters",
    "a product code is 13 digits (CIP13/EAN-13)",
    "the CIP13/EAN-13 check digit does not match",
    "a FINESS number is 9 characters: digits, possibly starting 2A or 2B",
    "an RPPS number is 11 digits starting with 1",
    "an insurer number (numéro AMC) is 8 to 10 digits",
])


# --------------------------------------------------------------------------- NIR


@given(nirs)
def test_any_nir_with_its_key_is_accepted_unchanged(nir):
    assert check_nir(nir) == nir
    assert check_nir(check_nir(nir)) == nir


@given(nirs.flatmap(lambda nir: st.tuples(st.just(nir), with_spaces(nir))))
def test_a_nir_with_spaces_compacts_to_the_same_value(pair):
    nir, spaced = pair
    assert check_nir(spaced) == nir


corsican_nirs = st.builds(
    lambda sex, year, month, place, order:
        nir_with_key(f"{sex}{year:02d}{month:02d}{place}{order:06d}"),
    st.sampled_from("12"), st.integers(0, 99), st.integers(1, 12), st.sampled_from(["2A", "2B"]),
    st.integers(0, 999999),
)


@given(corsican_nirs)
def test_a_corsican_nir_in_lower_case_normalises_to_upper_case(nir):
    assert check_nir(nir.lower()) == nir


@given(nirs, st.data())
def test_any_single_digit_change_is_refused(nir, data):
    """97 is prime and greater than 10: the key catches every single substitution."""
    positions = [i for i, c in enumerate(nir) if c.isdigit()]
    position = data.draw(st.sampled_from(positions))
    digit = data.draw(st.sampled_from([d for d in DIGITS if d != nir[position]]))
    changed = nir[:position] + digit + nir[position + 1:]
    message = refused(check_nir, changed)
    assert changed not in message


@given(nirs, st.data())
def test_any_swap_of_two_adjacent_different_digits_is_refused(nir, data):
    pairs = [i for i in range(len(nir) - 1)
             if nir[i].isdigit() and nir[i + 1].isdigit() and nir[i] != nir[i + 1]]
    assume(pairs)
    i = data.draw(st.sampled_from(pairs))
    swapped = nir[:i] + nir[i + 1] + nir[i] + nir[i + 2:]
    refused(check_nir, swapped)


@given(st.one_of(st.text(), st.text("0123456789AB ab", min_size=12, max_size=18)))
@example("185077511512397")  # wrong key
@example("18507751151239")  # too short
@example("2530 72B 073 004 70\n")
def test_any_string_is_accepted_only_as_a_valid_nir_and_never_echoed(text):
    try:
        value = check_nir(text)
    except ValueError as exc:
        assert_not_echoed(text, str(exc))
        assert_not_echoed(text.replace(" ", ""), str(exc))
    else:
        assert NIR_FORMAT.fullmatch(value) or re.fullmatch(r"[0-9]{15}", value)
        assert value == text.replace(" ", "").upper()
        assert check_nir(value) == value


# --------------------------------------------------------------------------- CIP13 / EAN-13


@given(st.one_of(eans, cip13s))
def test_any_ean13_with_its_check_digit_is_accepted_unchanged(code):
    assert check_cip13(code) == code


@given(st.one_of(eans, cip13s), st.integers(0, 12), st.integers(1, 9))
def test_any_single_digit_change_of_a_product_code_is_refused(code, position, shift):
    changed = code[:position] + str((int(code[position]) + shift) % 10) + code[position + 1:]
    assert "check digit" in refused(check_cip13, changed)


@given(st.text())
@example("3400935955838\n")
@example("٣٤٠٠٩٣٥٩٥٥٨٣٨")  # Arabic-Indic digits
def test_a_product_code_is_accepted_only_as_13_ascii_digits(text):
    try:
        value = check_cip13(text)
    except ValueError as exc:
        assert_not_echoed(text, str(exc))
    else:
        assert CIP_ASCII.fullmatch(value) and value == text


# --------------------------------------------------------------------------- FINESS, RPPS, AMC

ASCII_PRINTABLE = st.text(string.ascii_letters + DIGITS + string.punctuation + " ", max_size=14)
CONTROL_OR_UNICODE = [
    pytest.param(check_finess, FINESS_ASCII, "330001231\n", id="finess-trailing-newline"),
    pytest.param(check_finess, FINESS_ASCII, "３３０００１２３１", id="finess-fullwidth-digits"),
    pytest.param(check_rpps, RPPS_ASCII, "10001234565\n", id="rpps-trailing-newline"),
    pytest.param(check_rpps, RPPS_ASCII, "1０００１２３４５６５", id="rpps-fullwidth-digits"),
    pytest.param(check_insurer_number, INSURER_ASCII, "801234567\n",
                 id="insurer-trailing-newline"),
    pytest.param(check_insurer_number, INSURER_ASCII, "８０１２３４５６７",
                 id="insurer-fullwidth-digits"),
]

@given(finesses)
def test_any_finess_format_is_accepted_in_upper_case(value):
    assert check_finess(value) == value
    assert check_finess(value.lower()) == value
    assert check_finess(check_finess(value)) == value


@given(rppses)
def test_any_rpps_format_is_accepted_unchanged(value):
    assert check_rpps(value) == value


@given(insurers)
def test_any_insurer_number_of_8_to_10_digits_is_accepted_unchanged(value):
    assert check_insurer_number(value) == value


@pytest.mark.parametrize(("check", "canonical"), [
    (check_finess, FINESS_ASCII), (check_rpps, RPPS_ASCII),
    (check_insurer_number, INSURER_ASCII)], ids=["finess", "rpps", "insurer"])
@given(text=st.one_of(ASCII_PRINTABLE, st.text(max_size=14)))
def test_any_string_is_accepted_only_in_the_canonical_ascii_format(check, canonical, text):
    try:
        value = check(text)
    except ValueError as exc:
        assert not canonical.fullmatch(text.upper())
        assert_not_echoed(text, str(exc))
    else:
        assert canonical.fullmatch(value) and value == text.upper()


@pytest.mark.parametrize(("check", "canonical", "text"), CONTROL_OR_UNICODE)
def test_control_characters_and_unicode_digits_are_refused(check, canonical, text):
    """Whatever a check accepts is its canonical ASCII form (the operator gets it as is)."""
    try:
        value = check(text)
    except ValueError:
        return
    assert canonical.fullmatch(value), f"accepted {value!r}"


@pytest.mark.parametrize("path", ["dispenser.finess", "prescriber.rpps",
                                  "amc.insurer_number", "lines[0].product"])
@pytest.mark.parametrize("suffix", ["\n", "\r\n", " ", "\u0663"])
def test_a_claim_refuses_an_identifier_with_anything_after_it(path, suffix):
    body = json.loads(json.dumps(_example_claim()))
    parent, leaf = path.rsplit(".", 1)
    target = body["lines"][0] if parent == "lines[0]" else body[parent]
    target[leaf] += suffix
    assert fields(body) == [path]


@given(st.text(DIGITS, min_size=8, max_size=8))
def test_a_finess_with_its_luhn_digit_passes_the_luhn_warning(body):
    value = body + luhn_check_digit(body)
    assert finess_luhn_ok(value)
    wrong = body + str((int(luhn_check_digit(body)) + 1) % 10)
    assert not finess_luhn_ok(wrong)


@given(st.text(DIGITS, min_size=9, max_size=9))
def test_an_rpps_with_its_luhn_digit_passes_the_luhn_warning(body):
    value = "1" + body + luhn_check_digit("1" + body)
    assert rpps_luhn_ok(value) and check_rpps(value) == value
    wrong = value[:-1] + str((int(value[-1]) + 1) % 10)
    assert not rpps_luhn_ok(wrong) and check_rpps(wrong) == wrong  # only a warning


@given(st.one_of(finesses, rppses, st.text(DIGITS, max_size=12)))
def test_the_luhn_warnings_never_raise(value):
    assert isinstance(finess_luhn_ok(value), bool) and isinstance(rpps_luhn_ok(value), bool)


# --------------------------------------------------------------------------- claims


def today() -> date:
    return datetime.now(UTC).date()


def days_before(day: date, low: int, high: int) -> st.SearchStrategy[date]:
    return st.integers(low, high).map(lambda n: day - timedelta(days=n))


letters = st.characters(categories=["L"])
names = st.lists(st.text(letters, min_size=1, max_size=12), min_size=1, max_size=3).flatmap(
    lambda parts: st.sampled_from([" ", "-", "'"]).map(lambda sep: sep.join(parts)))


@st.composite
def lines(draw: st.DrawFn) -> dict[str, Any]:
    base = draw(st.integers(0, MAX_CENTS))
    amo = draw(st.integers(0, base))
    amc = draw(st.integers(0, base - amo))
    return {"code": draw(st.text(string.ascii_uppercase + DIGITS, min_size=1, max_size=4)),
            "product": draw(st.one_of(cip13s, eans)),
            "quantity": draw(st.integers(1, 999)),
            "unit_price_cents": draw(st.integers(0, MAX_CENTS)),
            "base_cents": base, "amo_cents": amo, "amc_cents": amc}


def nir_born(birth: date) -> st.SearchStrategy[str]:
    """A valid NIR whose year and month are this birth's (or a month without a known
    month: 20-42, 50-99), as the schema requires."""
    months = st.one_of(st.just(birth.month), st.integers(20, 42), st.integers(50, 99))
    return st.builds(
        lambda sex, month, place, order:
            nir_with_key(f"{sex}{birth.year % 100:02d}{month:02d}{place}{order:06d}"),
        st.sampled_from("12"), months,
        st.one_of(st.integers(1, 99).map(lambda n: f"{n:02d}"), st.sampled_from(["2A", "2B"])),
        st.integers(0, 999999))


@st.composite
def claims(draw: st.DrawFn, max_lines: int = 5) -> dict[str, Any]:
    now = today()
    birth = draw(days_before(now, 0, 120 * 365))
    service = draw(days_before(now, 0, (now - birth).days))
    valid_from = draw(days_before(service, -400, 800))
    valid_to = draw(st.integers(0, 1200).map(lambda n: valid_from + timedelta(days=n)))
    return {
        "invoice_number": draw(codes),
        "service_date": service.isoformat(),
        "dispenser": {"finess": draw(finesses)},
        "prescriber": {"rpps": draw(rppses)},
        "beneficiary": {
            "nir": draw(nir_born(birth).flatmap(with_spaces)), "birth_date": birth.isoformat(),
            "birth_rank": draw(st.integers(1, 9)),
            "last_name": draw(names), "first_name": draw(names),
        },
        "amc": {
            "insurer_number": draw(insurers),
            "convention_type": draw(st.text(string.ascii_letters + DIGITS + "-", max_size=20)),
            "routing_criterion": draw(st.text(string.ascii_letters + DIGITS + "-",
                                              max_size=20)),
            "member_number": draw(st.text(string.ascii_letters + DIGITS + "-",
                                          min_size=1, max_size=30)),
            "valid_from": valid_from.isoformat(), "valid_to": valid_to.isoformat(),
        },
        "lines": draw(st.lists(lines(), min_size=1, max_size=max_lines)),
    }


def _example_claim() -> dict[str, Any]:
    return ClaimCreate.model_config["json_schema_extra"]["examples"][0]  # type: ignore[index]


def parse(body: dict[str, Any]) -> ClaimCreate:
    """As the API parses it: from JSON."""
    return ClaimCreate.model_validate_json(json.dumps(body))


def as_api_errors(exc: ValidationError) -> list[dict[str, str]]:
    """The errors as the API names them: FastAPI puts a body's locations under "body"
    (an unknown field called `query` must be named `query`, not stripped as a prefix)."""
    return validation_errors([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])


def fields(body: dict[str, Any]) -> list[str]:
    try:
        claim = parse(body)
    except ValidationError as exc:
        return [error["field"] for error in as_api_errors(exc)]
    return [error["field"] for error in claim_rule_errors(claim)]


@MODEL
@given(claims())
def test_any_valid_claim_validates_with_no_rule_error(body):
    claim = parse(body)
    assert claim_rule_errors(claim) == []
    check_claim_rules(claim)
    assert claim.beneficiary.nir == body["beneficiary"]["nir"].replace(" ", "")
    assert claim.amc_requested_cents == sum(line["amc_cents"] for line in body["lines"])
    assert parse(json.loads(claim.model_dump_json())) == claim  # a stored claim re-validates


@MODEL
@given(claims(), st.data())
def test_amc_over_the_ticket_moderateur_names_that_line(body, data):
    index = data.draw(st.integers(0, len(body["lines"]) - 1))
    line = body["lines"][index]
    room = line["base_cents"] - line["amo_cents"]
    assume(room < MAX_CENTS)
    line["amc_cents"] = data.draw(st.integers(room + 1, MAX_CENTS))
    errors = claim_rule_errors(parse(body))
    assert [e["field"] for e in errors] == [f"lines[{index}].amc_cents"]
    with pytest.raises(ValidationFailed):
        check_claim_rules(parse(body))


@MODEL
@given(claims(), st.data())
def test_amo_over_the_base_names_that_line(body, data):
    index = data.draw(st.integers(0, len(body["lines"]) - 1))
    line = body["lines"][index]
    assume(line["base_cents"] < MAX_CENTS)
    line["amo_cents"] = data.draw(st.integers(line["base_cents"] + 1, MAX_CENTS))
    assert fields(body) == [f"lines[{index}].amo_cents"]


@MODEL
@given(claims(), st.integers(1, 3000))
def test_a_card_ending_before_it_starts_names_amc_valid_to(body, days):
    start = date.fromisoformat(body["amc"]["valid_from"])
    body["amc"]["valid_to"] = (start - timedelta(days=days)).isoformat()
    assert fields(body) == ["amc.valid_to"]


@MODEL
@given(claims(), st.integers(2, 3000))
def test_a_service_date_in_the_future_names_service_date(body, days):
    body["service_date"] = (today() + timedelta(days=days)).isoformat()
    assert fields(body) == ["service_date"]


@MODEL
@given(claims(), st.integers(1, 3000))
def test_a_birth_date_in_the_future_names_the_birth_date(body, days):
    body["beneficiary"]["birth_date"] = (today() + timedelta(days=days)).isoformat()
    assert fields(body) == ["beneficiary.birth_date"]


@MODEL
@given(claims(), st.integers(1, 3000))
def test_a_service_before_birth_names_service_date(body, days):
    birth = date.fromisoformat(body["beneficiary"]["birth_date"])
    body["service_date"] = (birth - timedelta(days=days)).isoformat()
    assert fields(body) == ["service_date"]


CENTS = ["unit_price_cents", "base_cents", "amo_cents", "amc_cents"]


@MODEL
@given(claims(max_lines=2), st.sampled_from(CENTS),
       st.one_of(st.integers(max_value=-1), st.integers(min_value=MAX_CENTS + 1),
                 st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                 st.text(DIGITS, min_size=1, max_size=5)))
def test_amounts_are_non_negative_bounded_json_integers(body, name, value):
    body["lines"][0][name] = value
    assert f"lines[0].{name}" in fields(body)


@MODEL
@given(claims(max_lines=1), st.one_of(st.integers(max_value=0), st.integers(min_value=1000)))
def test_quantities_are_1_to_999(body, quantity):
    body["lines"][0]["quantity"] = quantity
    assert fields(body) == ["lines[0].quantity"]


@MODEL
@given(claims(max_lines=1), st.sampled_from([0, 100, 150]))
def test_a_claim_has_1_to_99_lines(body, count):
    body["lines"] = body["lines"] * count
    assert fields(body) == ["lines"]


@MODEL
@given(claims(max_lines=1), st.sampled_from(["beneficiary.birth_date", "service_date",
                                             "amc.valid_from", "amc.valid_to"]),
       st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans()))
def test_dates_are_iso_strings_never_timestamps(body, path, value):
    *parents, leaf = path.split(".")
    target = body
    for parent in parents:
        target = target[parent]
    target[leaf] = value
    assert path in fields(body)


@MODEL
@given(claims(max_lines=1),
       st.one_of(st.text(min_size=1, max_size=30),
                 st.text("0123456789AB ", min_size=13, max_size=17)))
def test_an_invalid_nir_is_refused_naming_the_field_without_echoing_it(body, text):
    try:
        check_nir(text)
    except ValueError:
        pass
    else:
        assume(False)  # a valid NIR by chance
    body["beneficiary"]["nir"] = text
    try:
        parse(body)
    except ValidationError as exc:
        errors = as_api_errors(exc)
    else:
        pytest.fail("an invalid NIR was accepted")
    assert [e["field"] for e in errors] == ["beneficiary.nir"]
    rendered = json.dumps(errors, ensure_ascii=False)
    shown = text.strip()
    if len(shown) >= 4 and shown not in FIXED_TEXT:
        assert shown not in rendered


@MODEL
@given(claims(max_lines=1), st.sampled_from(["last_name", "first_name"]),
       st.one_of(st.text(DIGITS, min_size=1, max_size=3).map(lambda d: "Martin" + d),
                 st.sampled_from(["", "   ", "a\x00b", "x\x1fy", "\x7f", "Zo\të"]),
                 st.text(st.characters(exclude_categories=("Zs", "Zl", "Zp", "Cc")),
                         min_size=101, max_size=120)))
def test_names_refuse_digits_control_characters_empty_and_over_100(body, which, value):
    body["beneficiary"][which] = value
    assert fields(body) == [f"beneficiary.{which}"]


@MODEL
@given(claims(max_lines=1), st.sampled_from(["invoice_number", "amc.member_number"]),
       st.builds(lambda before, odd, after: before + odd + after,
                 st.text(INVOICE_ALPHABET, min_size=1, max_size=4),
                 st.characters(exclude_characters=INVOICE_ALPHABET),
                 st.text(INVOICE_ALPHABET, min_size=1, max_size=4)))
def test_invoice_and_member_numbers_are_letters_digits_and_dashes(body, path, value):
    *parents, leaf = path.split(".")
    target = body
    for parent in parents:
        target = target[parent]
    target[leaf] = value
    assert fields(body) == [path]


@MODEL
@given(claims(max_lines=1), st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True))
def test_unknown_fields_are_refused(body, key):
    assume(key not in body)
    body[key] = "x"
    assert fields(body) == [key]


# --------------------------------------------------------------------------- cursors


@given(st.from_regex(r"[0-9A-Z]{26}", fullmatch=True).map(lambda s: "clm_" + s))
def test_a_claims_cursor_round_trips(claim_id):
    assert decode_cursor(encode_cursor(claim_id)) == claim_id


@given(st.text(max_size=40).filter(lambda s: not (s.isalnum() and s.isascii())))
def test_a_cursor_naming_no_claim_id_is_refused(suffix):
    """Only ids of our own shape pass (a NUL or a quote never reaches the database)."""
    with pytest.raises(ValidationFailed):
        decode_cursor(encode_cursor("clm_" + suffix))


@given(st.one_of(st.text(max_size=60), st.binary(max_size=40).map(lambda b: b.hex())))
def test_any_claims_cursor_is_decoded_or_refused_as_a_422(text):
    try:
        decoded = decode_cursor(text)
    except ValidationFailed as exc:
        assert exc.status == 422 and exc.errors == [
            {"field": "cursor", "message": "not a cursor from `next`"}]
    else:
        assert decoded.startswith("clm_")


@given(st.integers(0, 2**63))
def test_an_events_cursor_round_trips(position):
    assert decode_event_cursor(encode_event_cursor(position)) == position


@given(st.text(max_size=60))
@example(base64.urlsafe_b64encode("ev:²".encode()).decode())  # isdigit() but not int()
@example(base64.urlsafe_b64encode("ev:٣".encode()).decode())  # a non-ASCII digit
def test_any_events_cursor_is_decoded_or_refused_as_a_422(text):
    try:
        position = decode_event_cursor(text)
    except ValidationFailed as exc:
        assert exc.status == 422 and exc.errors[0]["field"] == "after"
    else:
        assert position >= 0
