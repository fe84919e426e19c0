"""Credentials the database alone cannot forge: peppered digests and row MACs.

Secrets (API keys, session tokens, recovery codes) are stored as
HMAC(pepper, SHA-256(secret)): a copy of the database gives nothing to try offline,
and a row inserted by hand opens nothing without the pepper. The inner SHA-256 is
what the gateway stored before the pepper, so the upgrade wraps those digests
without knowing the secrets. Each key, user and session row also carries a MAC over
the fields that say what it may do (role, FINESS, scope, expiry, revocation...):
changing one by hand, or clearing a revocation, makes the row refuse to open.
Three keys are derived from the configured `credential_key` (HKDF), one per purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.observability.metrics import CREDENTIAL_TAMPER

log = structlog.get_logger("gateway.credentials")
NONCE_BYTES = 12


def _derive(key: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=f"gateway-credentials:{purpose}".encode()).derive(key)


def legacy_digest(secret: str) -> str:
    """What was stored before the pepper: the plain SHA-256 of the secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    return value


class CredentialKeys:
    """The pepper's three derived keys: digests, row MACs, sealed secrets (TOTP seeds)."""

    def __init__(self, key: bytes) -> None:
        self._digest_key = _derive(key, "digest")
        self._mac_key = _derive(key, "row-mac")
        self._box = AESGCM(_derive(key, "sealed-secrets"))

    def wrap(self, legacy: str) -> str:
        """The stored form of a digest made without the pepper."""
        return hmac.new(self._digest_key, legacy.encode(), hashlib.sha256).hexdigest()

    def digest(self, secret: str) -> str:
        return self.wrap(legacy_digest(secret))

    def matches(self, stored: str | None, secret: str) -> bool:
        return hmac.compare_digest(stored or "", self.digest(secret))

    def mac(self, kind: str, fields: dict[str, Any]) -> str:
        """A MAC over a row's kind and the fields that grant something."""
        body = json.dumps([kind, sorted((k, _canonical(v)) for k, v in fields.items())],
                          separators=(",", ":"), ensure_ascii=False, default=str)
        return hmac.new(self._mac_key, body.encode(), hashlib.sha256).hexdigest()

    def mac_ok(self, kind: str, fields: dict[str, Any], stored: str | None) -> bool:
        return hmac.compare_digest(stored or "", self.mac(kind, fields))

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._box.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, *, context: str) -> bytes | None:
        try:
            return self._box.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:],
                                     context.encode())
        except (InvalidTag, ValueError):
            return None


def tampered(kind: str, row_id: str) -> None:
    """A row whose MAC does not match: refused by the caller; counted and logged here."""
    CREDENTIAL_TAMPER.labels(kind).inc()
    log.warning("credential.tampered", kind=kind, row_id=row_id[:40])
