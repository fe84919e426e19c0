"""Console passwords: argon2id hashes, one-time passwords set by an admin, a length rule."""

from __future__ import annotations

import functools
import secrets
import string

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 12
MAX_LENGTH = 200
ONE_TIME_ALPHABET = string.ascii_letters + string.digits
HASHER = PasswordHasher()  # argon2id, RFC 9106's low-memory profile (t=3, m=64 MiB, p=4)


@functools.cache
def _decoy() -> str:
    """The hash checked when the account does not exist. Made on first use, not at import:
    every process that imports the console (each CLI command, each gateway) paid one
    argon2 hash for it, ~0.3 s of CPU here."""
    return HASHER.hash(secrets.token_urlsafe(16))


class WeakPassword(ValueError):
    """A new password does not meet the rule; the message says which (in French)."""


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Constant work whether or not the account has a password (the decoy is checked)."""
    try:
        return HASHER.verify(stored or _decoy(), password[:MAX_LENGTH]) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def one_time_password() -> str:
    """An initial or reset password, shown once: 20 characters, ~119 bits."""
    return "".join(secrets.choice(ONE_TIME_ALPHABET) for _ in range(20))


def check_new_password(password: str, confirmation: str) -> None:
    if password != confirmation:
        raise WeakPassword("Les deux saisies ne sont pas identiques.")
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"Le mot de passe doit compter au moins {MIN_LENGTH} caractères.")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"Le mot de passe ne doit pas dépasser {MAX_LENGTH} caractères.")
    if len(set(password)) < 5:
        raise WeakPassword("Le mot de passe est trop répétitif.")
