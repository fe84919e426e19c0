"""The second factor: TOTP (RFC 6238) enrolled from a QR code, and ten recovery codes.

A TOTP code is accepted once (the last accepted time step is kept), within one step
of clock drift. Recovery codes are shown once and stored as peppered digests; each
works once.
"""

from __future__ import annotations

import io
import json
import secrets
import time

import pyotp
import qrcode
import qrcode.image.svg

from gateway.identity.credentials import CredentialKeys

ISSUER = "Passerelle tiers payant"
STEP_S = 30
RECOVERY_CODES = 10
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The enrolment QR code as inline SVG: drawn by the gateway, no third party sees it."""
    image = qrcode.make(uri, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = io.BytesIO()
    image.save(buffer)
    return buffer.getvalue().decode()


def accepted_step(secret: str, code: str, last_step: int, now: float | None = None) -> int | None:
    """The time step the code belongs to, if valid and newer than the last one accepted."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    current = int((now if now is not None else time.time()) // STEP_S)
    for step in (current, current - 1, current + 1):
        if step > last_step and secrets.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def current_code(secret: str) -> str:
    """The code an authenticator shows now (development and tests only)."""
    return pyotp.TOTP(secret).now()


def new_recovery_codes() -> list[str]:
    """Ten codes like `k7mq-x2rd-9fta` (~60 bits each)."""
    def one() -> str:
        raw = "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(12))
        return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"

    return [one() for _ in range(RECOVERY_CODES)]


def normalise_recovery(code: str) -> str:
    raw = "".join(ch for ch in code.lower() if ch.isalnum())
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}" if len(raw) == 12 else ""


def stored_recovery_codes(codes: list[str], credentials: CredentialKeys) -> str:
    return json.dumps([credentials.digest(code) for code in codes])


def use_recovery_code(stored: str, code: str, credentials: CredentialKeys) -> str | None:
    """The stored list without the code, if it was one of them; else None."""
    normal = normalise_recovery(code)
    digests = json.loads(stored or "[]")
    if not normal:
        return None
    wanted = credentials.digest(normal)
    remaining = [d for d in digests if not secrets.compare_digest(d, wanted)]
    return json.dumps(remaining) if len(remaining) < len(digests) else None
