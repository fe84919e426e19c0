"""The gateway's side of the hand-over files' JOSE: it signs and encrypts a batch, and
verifies an acknowledgement with the operator's configured public key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from joserfc import jwe, jws
from joserfc.errors import BadSignatureError, ExceededSizeError, JoseError

from adapters.batch_files import (
    ACK_JWS_PAYLOAD,
    ACK_TYP,
    BATCH_TYP,
    MAX_ACK_BYTES,
    Algorithms,
    batch_jwe_registry,
)
from gateway.handover.keys import CONTENT, ENCRYPTION_ALGS, SIGNATURE_ALGS, public_key
from gateway.receipts.signing import ReceiptSigner


class UnverifiedFile(ValueError):
    """The acknowledgement is not signed by the operator's key: the message says why."""


def seal_batch(content: bytes, *, signer: ReceiptSigner, recipient: Mapping[str, Any]) -> str:
    """The batch file: the content signed by the gateway (a JWS the operator checks with
    the published JWKS), then encrypted to the operator's public key (a compact JWE)."""
    signed = signer.sign_document(content, typ=BATCH_TYP)
    key, alg = public_key(recipient, algs=ENCRYPTION_ALGS)
    header: dict[str, Any] = {"alg": alg, "enc": CONTENT, "cty": BATCH_TYP}
    if isinstance(recipient.get("kid"), str):
        header["kid"] = recipient["kid"]
    return jwe.encrypt_compact(header, signed.encode("ascii"), key,
                               registry=batch_jwe_registry([alg, CONTENT]))


def verify_acks(token: str, *, ack_key: Mapping[str, Any]) -> bytes:
    """The signed content of an acknowledgement file, if `ack_key` signed it with the one
    algorithm of that key and the acknowledgement `typ`; UnverifiedFile otherwise."""
    key, alg = public_key(ack_key, algs=SIGNATURE_ALGS)
    registry = Algorithms([alg], max_payload=ACK_JWS_PAYLOAD)
    text = token.strip()
    try:
        header = jws.extract_compact(text.encode("ascii"), registry=registry).protected
    except ExceededSizeError as exc:
        raise UnverifiedFile(f"too large: an acknowledgement holds at most {MAX_ACK_BYTES} "
                             f"bytes ({exc})") from exc
    except (JoseError, ValueError, TypeError, AttributeError, UnicodeEncodeError) as exc:
        raise UnverifiedFile("not a compact JWS") from exc
    if not isinstance(header, dict) or header.get("typ") != ACK_TYP:
        raise UnverifiedFile(f"not a {ACK_TYP} document (a batch or a receipt?)")
    if header.get("alg") != alg:
        raise UnverifiedFile(f"signed with {header.get('alg')!r}, not {alg}")
    try:
        return jws.deserialize_compact(text, key, registry=registry).payload
    except BadSignatureError as exc:
        raise UnverifiedFile("the operator's signature does not verify: altered, or "
                             "signed by another key") from exc
    except (JoseError, ValueError, TypeError) as exc:
        raise UnverifiedFile("not a compact JWS") from exc
