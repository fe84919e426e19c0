"""The gateway's own password hashing profile: the other tests hash with cheap argon2id
parameters (tests/conftest.py `cheap_password_hashing`); these, marked
`real_password_hashing`, check what the gateway itself writes and verifies."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from gateway.identity import passwords

pytestmark = pytest.mark.real_password_hashing

PASSWORD = "correct horse battery staple"


def test_passwords_are_hashed_with_rfc_9106s_low_memory_profile():
    stored = passwords.hash_password(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$"), stored
    assert passwords.verify_password(stored, PASSWORD)
    assert not passwords.verify_password(stored, PASSWORD + "!")


def test_an_unknown_account_is_checked_against_a_decoy_of_the_same_cost():
    assert passwords._decoy().startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert not passwords.verify_password(None, PASSWORD)


def test_a_hash_made_with_other_parameters_still_verifies():
    """The tests' cheap hashes log in because a hash carries its own parameters."""
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    assert passwords.verify_password(cheap, PASSWORD)
