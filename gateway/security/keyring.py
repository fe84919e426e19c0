"""The gateway's secret keys: loaded from settings, or generated under data_dir in development.

One key, one purpose: `data_key` encrypts personal data, `index_key` computes the
keyed hashes used for lookups, `signing_key` signs receipts, `audit_key` seals each
audit entry (HMAC), `audit_head_key` signs the audit chain's heads, `redis_key` MACs
the breaker messages shared through Redis (needed only with `redis_url`). Outside
development a missing key stops the start.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.settings import ConfigError, Settings

KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class KeyRing:
    data_key: bytes
    previous_data_keys: tuple[bytes, ...]
    index_key: bytes
    signing_key: bytes
    previous_signing_keys: tuple[bytes, ...] = ()


def decode_key(value: str, *, name: str) -> bytes:
    """Standard or URL-safe base64, padded or not, of exactly 32 bytes."""
    text = value.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{name}: not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise ConfigError(f"{name}: must decode to {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def _dev_key(data_dir: Path, filename: str) -> str:
    """Read, or create with owner-only permissions, a development key file."""
    path = data_dir / filename
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode() + "\n")
    return path.read_text().strip()


def _required_key(settings: Settings, name: str) -> bytes:
    """`security.<name>` decoded; generated under data_dir in development, else required."""
    value = getattr(settings.security, name).get_secret_value()
    if not value:
        if not settings.is_development:
            raise ConfigError(
                f"security.{name}: required outside development "
                f"(set it in the file or GATEWAY_SECURITY__{name.upper()})"
            )
        value = _dev_key(settings.data_dir, f"{name}.b64")
    return decode_key(value, name=f"security.{name}")


def load_audit_key(settings: Settings) -> bytes:
    """The key that seals audit entries: only the gateway can append a valid entry."""
    return _required_key(settings, "audit_key")


def load_credential_key(settings: Settings) -> bytes:
    """The pepper of stored credentials and the key of their row MACs."""
    return _required_key(settings, "credential_key")


def load_audit_head_key(settings: Settings) -> bytes:
    """The Ed25519 seed that signs the audit chain's heads: a key of their own."""
    return _required_key(settings, "audit_head_key")


def load_redis_key(settings: Settings) -> bytes | None:
    """The HMAC key of breaker messages shared through Redis; None without `redis_url`."""
    return _required_key(settings, "redis_key") if settings.redis_url else None


def load_keyring(settings: Settings) -> KeyRing:
    security = settings.security
    resolved = {name: _required_key(settings, name)
                for name in ("data_key", "index_key", "signing_key")}
    previous = tuple(
        decode_key(key.get_secret_value(), name=f"security.previous_data_keys[{i}]")
        for i, key in enumerate(security.previous_data_keys)
    )
    previous_signing = tuple(
        decode_key(key.get_secret_value(), name=f"security.previous_signing_keys[{i}]")
        for i, key in enumerate(security.previous_signing_keys)
    )
    return KeyRing(
        data_key=resolved["data_key"],
        previous_data_keys=previous,
        index_key=resolved["index_key"],
        signing_key=resolved["signing_key"],
        previous_signing_keys=previous_signing,
    )
