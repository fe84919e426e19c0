"""Checks of the French identifiers a claim carries (docs/integration.md lists them).

Each check returns the normalised value or raises ValueError with a message that
never repeats the value: it may be a NIR.
"""

from __future__ import annotations

import re
from datetime import date

from stdnum import ean, luhn
from stdnum.fr import nir as stdnum_nir

# [0-9], not \d (any Unicode digit), and fullmatch, not $ (which allows a final newline).
FINESS_FORMAT = re.compile(r"(?:[0-9]{2}|2A|2B)[0-9]{7}")
RPPS_FORMAT = re.compile(r"1[0-9]{10}")
INSURER_FORMAT = re.compile(r"[0-9]{8,10}")


def check_nir(value: str) -> str:
    """13 characters and a 2-digit key (97 - N mod 97; 2A/2B for Corsica)."""
    compact = value.replace(" ", "").upper()
    if not re.fullmatch(r"[0-9]{5}(?:[0-9]{2}|2A|2B)[0-9]{8}", compact):
        raise ValueError("a NIR is 15 characters: 13 digits (2A/2B allowed) and a 2-digit key")
    if not stdnum_nir.is_valid(compact):
        raise ValueError("the NIR's key does not match its 13 characters")
    return compact


def check_birth_date_against_nir(nir: str, birth: date) -> date:
    """A valid NIR's characters 2-3 are the birth year's last two digits and 4-5 its month,
    when that is a calendar month (01-12): 20-42 and 50 or more stand for civil records
    without a known month, and are not checked."""
    month = int(nir[3:5])
    if 1 <= month <= 12 and (int(nir[1:3]) != birth.year % 100 or month != birth.month):
        raise ValueError("the birth year and month do not match the NIR's")
    return birth


def check_cip13(value: str) -> str:
    """A CIP13 (34009...) or any EAN-13 product code, with its check digit."""
    if not re.fullmatch(r"[0-9]{13}", value):
        raise ValueError("a product code is 13 digits (CIP13/EAN-13)")
    if not ean.is_valid(value):
        raise ValueError("the CIP13/EAN-13 check digit does not match")
    return value


def check_finess(value: str) -> str:
    """9 characters, may start with 2A/2B. The Luhn key is not enforced (not official)."""
    upper = value.upper()
    if not FINESS_FORMAT.fullmatch(upper):
        raise ValueError("a FINESS number is 9 characters: digits, possibly starting 2A or 2B")
    return upper


def finess_luhn_ok(value: str) -> bool:
    return luhn.is_valid(value.replace("2A", "20").replace("2B", "20"))


def check_rpps(value: str) -> str:
    """11 digits starting with 1; the Luhn key is checked separately as a warning."""
    if not RPPS_FORMAT.fullmatch(value):
        raise ValueError("an RPPS number is 11 digits starting with 1")
    return value


def rpps_luhn_ok(value: str) -> bool:
    return luhn.is_valid(value)


def check_insurer_number(value: str) -> str:
    if not INSURER_FORMAT.fullmatch(value):
        raise ValueError("an insurer number (numéro AMC) is 8 to 10 digits")
    return value
