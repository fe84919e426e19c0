"""The operator's public keys for the hand-over, as configured (public JWKs).

`handover_encryption_key`: batches are encrypted to it; `handover_ack_key`: it verifies
the operator's acknowledgement files. Only public keys belong in the configuration, and
only the kinds listed here, each with the one algorithm used with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey

from adapters.batch_files import import_jwk

ECDH = "ECDH-ES+A256KW"
CONTENT = "A256GCM"
# (kty, crv) -> the algorithm used with that key; RSA keys have no curve
ENCRYPTION_ALGS: dict[tuple[str, str | None], str] = {
    ("EC", "P-256"): ECDH, ("EC", "P-384"): ECDH, ("EC", "P-521"): ECDH,
    ("OKP", "X25519"): ECDH, ("RSA", None): "RSA-OAEP-256",
}
SIGNATURE_ALGS: dict[tuple[str, str | None], str] = {
    ("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256",
}
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})
MIN_RSA_BITS = 2048
PublicKey = ECKey | OKPKey | RSAKey


def kind_of(jwk: Mapping[str, Any]) -> tuple[str, str | None]:
    kty = jwk.get("kty")
    return str(kty), (None if kty == "RSA" else str(jwk.get("crv")))


def public_key(jwk: Mapping[str, Any], *, algs: Mapping[tuple[str, str | None], str]
               ) -> tuple[PublicKey, str]:
    """The key and its algorithm; ValueError saying what is wrong (never the key)."""
    if PRIVATE_MEMBERS & set(jwk):
        raise ValueError("a private key: give the public part only")
    kind = kind_of(jwk)
    alg = algs.get(kind)
    if alg is None:
        usable = ", ".join(f"{kty} {crv}" if crv else kty for kty, crv in algs)
        raise ValueError(f"unusable key type: one of {usable}")
    try:
        key = import_jwk(jwk)
    except (JoseError, ValueError, TypeError) as exc:
        raise ValueError("not a valid public JWK") from exc
    if isinstance(key, RSAKey) and key.raw_value.key_size < MIN_RSA_BITS:
        raise ValueError(f"an RSA key of at least {MIN_RSA_BITS} bits")
    return key, alg


def check_jwk(value: Mapping[str, Any], *, algs: Mapping[tuple[str, str | None], str]
              ) -> Mapping[str, Any]:
    """For the settings' validators: empty (hand-over off) or a usable public key."""
    if value:
        public_key(value, algs=algs)
    return value
