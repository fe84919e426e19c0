"""Standard Webhooks signatures, so receivers can use any of the spec's verifiers.

No gateway imports: `gateway.settings` validates configured secrets with `decode_secret`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix the spec gives secrets, not a secret
MIN_KEY_BYTES = 24  # the spec recommends 24 to 64 bytes
MAX_KEY_BYTES = 64
TOLERANCE_S = 300


class InvalidSignature(Exception):
    """A webhook's headers or signature do not match its body."""


def decode_secret(secret: str) -> bytes:
    """The key bytes of "whsec_<base64>" (standard or URL-safe base64, padded or not)."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    text = secret[len(SECRET_PREFIX):].replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret is 'whsec_' followed by base64") from exc
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a webhook key is {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, body),
    }


def verify(
    key: bytes, headers: Mapping[str, str], body: bytes, *,
    now: float | None = None, tolerance_s: int = TOLERANCE_S,
) -> None:
    """What a receiver does; raise InvalidSignature unless one `v1` signature matches."""
    try:
        msg_id = headers["webhook-id"]
        timestamp = int(headers["webhook-timestamp"])
        signatures = headers["webhook-signature"].split(" ")
    except (KeyError, ValueError) as exc:
        raise InvalidSignature("missing or malformed webhook headers") from exc
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise InvalidSignature("timestamp outside the tolerance")
    expected = sign(key, msg_id, timestamp, body)
    for candidate in signatures:
        if candidate.startswith("v1,") and hmac.compare_digest(candidate, expected):
            return
    raise InvalidSignature("no matching signature")
