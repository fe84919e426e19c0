"""Receipt tokens (docs/integration.md): compact JWS, EdDSA over Ed25519, with a kid.

Anyone holding the published JWKS can check a receipt offline; old keys stay in the
JWKS after a rotation so receipts already printed keep verifying.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError, UnsupportedAlgorithmError
from joserfc.jwa import JWSAlgModel
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry

ALG = "EdDSA"
REQUIRED_FIELDS: tuple[str, ...] = (
    "rid", "claim_id", "finess", "invoice_number", "operator", "insurer_number",
    "amc_cents", "patient_due_cents", "basis", "iat", "exp", "iss",
)
_INT_FIELDS = ("amc_cents", "patient_due_cents")
_TIME_FIELDS = ("iat", "exp")
_STR_FIELDS = tuple(f for f in REQUIRED_FIELDS if f not in _INT_FIELDS + _TIME_FIELDS)


class InvalidReceipt(Exception):
    """The token is not an authentic, well-formed receipt; the message says why, briefly."""


@dataclass(frozen=True, slots=True)
class VerifiedReceipt:
    payload: dict[str, Any]
    kid: str
    expired: bool


class _ContractRegistry(JWSRegistry):
    """Allows "EdDSA" alone, which the contract mandates and joserfc flags as deprecated
    by RFC 9864: without the warning, so that signing needs no `warnings.catch_warnings`
    (process-wide state, not thread-safe, and ~10 % of a receipt's cost)."""

    def get_alg(self, name: str) -> JWSAlgModel:
        if name != ALG:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


_REGISTRY = _ContractRegistry(algorithms=[ALG])
RECEIPT_TYP = "JWT"


def key_id(public_key_bytes: bytes) -> str:
    """A stable kid: the start of base64url(sha256(raw public key))."""
    digest = hashlib.sha256(public_key_bytes).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:16]


def _b64(data: str | bytes) -> bytes:
    """base64url without padding (RFC 7515's encoding of every JWS part)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class ReceiptSigner:
    """Signs with the current seed; publishes the current and previous public keys."""

    def __init__(self, seed: bytes, previous_seeds: Sequence[bytes] = ()) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self._kid = key_id(_raw_public(self._private))
        self._signing_key = OKPKey.import_key(self._private)
        # A receipt's protected header never changes: encoded once. Ed25519 signatures are
        # deterministic, so the token is the one joserfc's `serialize_compact` makes, byte
        # for byte (a test holds them equal), at about half its cost: signing runs for
        # every receipt, inside the write group that queues the claim.
        self._receipt_header = _b64(json.dumps({"alg": ALG, "kid": self._kid,
                                                "typ": RECEIPT_TYP}, separators=(",", ":")))
        privates = [self._private] + [
            Ed25519PrivateKey.from_private_bytes(s) for s in previous_seeds
        ]
        self._jwks_keys: list[dict[str, Any]] = []
        seen: set[str] = set()
        for private in privates:
            kid = key_id(_raw_public(private))
            if kid in seen:
                continue
            seen.add(kid)
            public = OKPKey.import_key(private.public_key())
            self._jwks_keys.append(
                {"kty": "OKP", "crv": "Ed25519", "x": public.as_dict()["x"], "kid": kid,
                 "alg": ALG, "use": "sig"}
            )

    @property
    def kid(self) -> str:
        return self._kid

    def sign(self, payload: dict[str, Any]) -> str:
        """A compact JWS of the payload (sorted, compact JSON) under the current key."""
        missing = [name for name in REQUIRED_FIELDS if name not in payload]
        if missing:
            raise ValueError(f"receipt payload lacks {', '.join(missing)}")
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
        signing_input = self._receipt_header + b"." + _b64(body)
        return (signing_input + b"." + _b64(self._private.sign(signing_input))).decode("ascii")

    def sign_document(self, payload: bytes, *, typ: str) -> str:
        """A compact JWS of another kind of document (a hand-over batch) under the same
        published key: its `typ` keeps it from ever passing for a receipt, and back."""
        if typ == RECEIPT_TYP:
            raise ValueError("a document is not a receipt: give it a typ of its own")
        header = {"alg": ALG, "kid": self._kid, "typ": typ}
        return jws.serialize_compact(header, payload, self._signing_key, registry=_REGISTRY)

    def jwks(self) -> dict[str, Any]:
        """The published key set: current key first, then previous ones."""
        return {"keys": [dict(key) for key in self._jwks_keys]}


def _find_key(jwks: dict[str, Any], kid: str) -> OKPKey:
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise InvalidReceipt("unusable key set")
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("kid") != kid:
            continue
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            raise InvalidReceipt("key is not Ed25519")
        try:
            # x may be anything the key set holds: import_key refuses what is not a key
            return OKPKey.import_key({"kty": "OKP", "crv": "Ed25519",
                                      "x": entry.get("x")})  # type: ignore[dict-item]
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidReceipt("unusable key in key set") from exc
    raise InvalidReceipt("unknown key")


def _check_payload(payload: Any, issuer: str | None) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidReceipt("payload is not a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in payload]
    if missing:
        raise InvalidReceipt(f"missing field {missing[0]}")
    for name in _STR_FIELDS:
        if not isinstance(payload[name], str):
            raise InvalidReceipt(f"field {name} is not a string")
    for name in _INT_FIELDS:
        if not isinstance(payload[name], int) or isinstance(payload[name], bool):
            raise InvalidReceipt(f"field {name} is not an integer")
    for name in _TIME_FIELDS:
        value = payload[name]
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidReceipt(f"field {name} is not a NumericDate")
    if issuer is not None and payload["iss"] != issuer:
        raise InvalidReceipt("wrong issuer")
    return payload


def verify(token: str, jwks: dict[str, Any], *, now: datetime | None = None,
           issuer: str | None = None) -> VerifiedReceipt:
    """Check a receipt against a JWKS; an expired receipt is still authentic (`expired`)."""
    if not isinstance(token, str):
        raise InvalidReceipt("token is not a string")
    try:
        # joserfc only checks `"alg" in header`: a JSON list or string header gets through
        header = jws.extract_compact(token.encode("utf-8")).protected
    except (JoseError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidReceipt("malformed token") from exc
    if not isinstance(header, dict):
        raise InvalidReceipt("malformed token")
    if header.get("alg") != ALG:
        raise InvalidReceipt("algorithm not allowed")
    if header.get("typ", RECEIPT_TYP) != RECEIPT_TYP:
        raise InvalidReceipt("not a receipt")  # a hand-over batch, signed by the same key
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise InvalidReceipt("missing key id")
    key = _find_key(jwks, kid)
    try:
        signed = jws.deserialize_compact(token, key, registry=_REGISTRY)
    except BadSignatureError as exc:
        raise InvalidReceipt("bad signature") from exc
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidReceipt("malformed token") from exc
    try:
        payload = json.loads(signed.payload)
    except (ValueError, TypeError) as exc:
        raise InvalidReceipt("payload is not JSON") from exc
    checked = _check_payload(payload, issuer)
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return VerifiedReceipt(payload=checked, kid=kid,
                           expired=moment.timestamp() >= checked["exp"])
