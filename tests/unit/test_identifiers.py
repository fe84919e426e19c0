"""Identifier checks against DOMAIN.md's examples and properties over generated values."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st
from synthetic import nir_with_key

from gateway.domain.identifiers import (
    check_birth_date_against_nir,
    check_cip13,
    check_finess,
    check_insurer_number,
    check_nir,
    check_rpps,
    finess_luhn_ok,
    rpps_luhn_ok,
)


@pytest.mark.parametrize("nir", ["185077511512396", "255081416802538", "253072B07300470"])
def test_domain_examples_are_valid_nirs(nir):
    assert check_nir(nir) == nir


nir_bodies = st.builds(
    lambda sex, year, month, place, order: f"{sex}{year:02d}{month:02d}{place}{order:06d}",
    st.sampled_from("12"), st.integers(0, 99), st.integers(1, 99),
    st.one_of(st.integers(1, 99).map(lambda n: f"{n:02d}"), st.sampled_from(["2A", "2B"])),
    st.integers(0, 999999),
)


@given(nir_bodies)
def test_any_body_with_its_key_is_valid(body):
    assert check_nir(nir_with_key(body)) == nir_with_key(body)


@given(nir_bodies, st.integers(1, 96))
def test_any_other_key_is_refused(body, shift):
    good = int(nir_with_key(body)[-2:])
    bad = (good + shift) % 97 or 97
    with pytest.raises(ValueError, match="key"):
        check_nir(f"{body}{bad:02d}")


@given(st.text(max_size=20))
def test_nir_check_never_crashes_and_never_echoes(text):
    try:
        check_nir(text)
    except ValueError as exc:
        assert text not in str(exc) or len(text) < 3


@given(nir_bodies, st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)))
def test_a_birth_date_must_fit_the_nirs_calendar_month(body, birth):
    """Characters 2-3 are the birth year's last two digits, 4-5 its month; months 20-42
    and 50 or more (civil records without a known month) are not checked."""
    nir, year, month = nir_with_key(body), int(body[1:3]), int(body[3:5])
    fits = year == birth.year % 100 and month == birth.month
    if 1 <= month <= 12 and not fits:
        with pytest.raises(ValueError, match="birth year and month") as refused:
            check_birth_date_against_nir(nir, birth)
        assert birth.isoformat() not in str(refused.value) and nir not in str(refused.value)
    else:
        assert check_birth_date_against_nir(nir, birth) == birth


def ean_check_digit(first12: str) -> str:
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(first12))
    return str((10 - total % 10) % 10)


@given(st.integers(0, 10**7 - 1))
def test_cip13_check_digit(n):
    first12 = f"34009{n:07d}"
    good = first12 + ean_check_digit(first12)
    assert check_cip13(good) == good
    bad = first12 + str((int(ean_check_digit(first12)) + 1) % 10)
    with pytest.raises(ValueError, match="check digit"):
        check_cip13(bad)


@pytest.mark.parametrize("value", ["330001231", "2A0000017", "2b0000017"])
def test_finess_format(value):
    assert check_finess(value) == value.upper()


@pytest.mark.parametrize("value", ["33000123", "3300012311", "2C0000017", "33000123A", ""])
def test_bad_finess(value):
    with pytest.raises(ValueError):
        check_finess(value)


def test_luhn_is_only_a_warning():
    assert finess_luhn_ok("330001231") and rpps_luhn_ok("10001234565")
    assert not rpps_luhn_ok("10001234566")
    assert check_rpps("10001234566") == "10001234566"


@pytest.mark.parametrize("value", ["20001234565", "1000123456", "1000123456X"])
def test_bad_rpps(value):
    with pytest.raises(ValueError):
        check_rpps(value)


@given(st.from_regex(r"[0-9]{8,10}", fullmatch=True))
def test_insurer_numbers_of_8_to_10_digits(value):
    assert check_insurer_number(value) == value


@pytest.mark.parametrize("value", ["1234567", "12345678901", "8012345A7"])
def test_bad_insurer_numbers(value):
    with pytest.raises(ValueError):
        check_insurer_number(value)
