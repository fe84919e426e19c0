"""The hand-over files (docs/handover.md), read and written the same way on both sides.

A batch, gateway to operator: a compact JWE (to the operator's public key) whose
plaintext is a compact JWS (the gateway's receipt key, published in its JWKS, `typ`
`tp-batch+jws`) over NDJSON: a header line, then one line per claim with its id (also
its idempotency key) and the body exactly as the online protocol sends it.

An acknowledgement, operator to gateway: a compact JWS (the operator's own key, `typ`
`tp-batch-ack+jws`) over NDJSON: a header line, then one line per claim answered.

Only the operator's side of the JOSE work is here (opening a batch, signing its
acknowledgement): the simulator uses it, and so may an operator. Lines are canonical
JSON (sorted keys, no spaces), one per line, each ending in a newline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from joserfc import jwe, jws
from joserfc.errors import ExceededSizeError, JoseError
from joserfc.jwa import JWSAlgModel
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

BATCH_FORMAT = "tp-batch/1"
ACK_FORMAT = "tp-batch-ack/1"
BATCH_TYP = "tp-batch+jws"
ACK_TYP = "tp-batch-ack+jws"
CLAIM_ID = re.compile(r"^clm_[0-9A-Z]{26}$")
BATCH_ID = re.compile(r"^bat_[0-9A-Z]{26}$")
CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
MAX_CENTS = 100_000_000
_JWE_ALGS = ["ECDH-ES+A256KW", "RSA-OAEP-256", "A256GCM"]

# Sizes. joserfc refuses by default a JWS payload above 128,000 bytes and a JWE
# ciphertext above 64 KiB: some 60 claims. Both sides size their registries from these
# bounds instead: the gateway never exports more claims, or more bytes of NDJSON, than
# MAX_BATCH_CLAIMS and MAX_BATCH_BYTES (typical claims take some 650 bytes a line:
# 10,000 of them 6.5 MB; a claim of 99 lines and the longest names, 16 KB), and an
# acknowledgement answers at most a batch (its longest well-formed line is 275 bytes).
MAX_BATCH_CLAIMS = 10_000
MAX_BATCH_BYTES = 16 * 1024 * 1024
MAX_ACK_LINE_BYTES = 512
MAX_ACK_BYTES = 4096 + MAX_BATCH_CLAIMS * MAX_ACK_LINE_BYTES
_MARGIN = 1024 * 1024  # what the readers accept beyond those bounds
_MAX_HEADER = 512  # a JWS protected header, base64url (joserfc's default)
_MAX_SIGNATURE = 1024


def _b64(size: int) -> int:
    """The length of the base64url (unpadded) of `size` bytes, at most."""
    return 4 * -(-size // 3)


def _jws_length(payload: int) -> int:
    """The longest compact JWS of a payload of `payload` bytes."""
    return _MAX_HEADER + 1 + _b64(payload) + 1 + _MAX_SIGNATURE


BATCH_JWS_PAYLOAD = MAX_BATCH_BYTES + _MARGIN
ACK_JWS_PAYLOAD = MAX_ACK_BYTES + _MARGIN


def batch_jwe_registry(algorithms: list[str]) -> JWERegistry:
    """The JWE registry of a batch: these algorithms, a ciphertext as long as the largest
    batch's signed content (joserfc's 64 KiB default holds some 60 claims)."""
    registry = JWERegistry(algorithms=algorithms)
    registry.max_ciphertext_length = _b64(_jws_length(BATCH_JWS_PAYLOAD))
    return registry
_SIG_ALGS = {("OKP", "Ed25519"): "EdDSA", ("EC", "P-256"): "ES256"}


class BadFile(ValueError):
    """The file cannot be used; `problems` says why, line by line (1 is the header)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def canonical(value: Mapping[str, Any]) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def ndjson(lines: Iterable[Mapping[str, Any]]) -> bytes:
    return "".join(canonical(line) + "\n" for line in lines).encode("utf-8")


@dataclass(frozen=True, slots=True)
class BatchClaim:
    claim_id: str
    body: dict[str, Any]  # the online protocol's body, `claim_id` included


@dataclass(frozen=True, slots=True)
class Batch:
    batch_id: str
    operator: str
    created_at: str
    claims: list[BatchClaim]


def batch_content(batch: Batch) -> bytes:
    """The NDJSON the gateway signs: the header, then the claims in queue order."""
    header = {"type": "batch", "format": BATCH_FORMAT, "batch_id": batch.batch_id,
              "operator": batch.operator, "created_at": batch.created_at,
              "count": len(batch.claims)}
    return ndjson([header, *map(_claim_line, batch.claims)])


def _claim_line(claim: BatchClaim) -> dict[str, Any]:
    return {"type": "claim", "claim_id": claim.claim_id, "idempotency_key": claim.claim_id,
            "body": claim.body}


def line_bytes(claim: BatchClaim) -> int:
    """How many bytes the claim's line takes in a batch's NDJSON."""
    return len(ndjson([_claim_line(claim)]))


def _objects(content: bytes) -> list[Any]:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadFile(["not UTF-8"]) from exc
    if not text.endswith("\n"):
        raise BadFile(["the last line does not end with a newline (cut short?)"])
    objects, problems = [], []
    for number, line in enumerate(text[:-1].split("\n"), start=1):
        try:
            objects.append(json.loads(line))
        except ValueError:
            problems.append(f"line {number}: not JSON")
    if problems:
        raise BadFile(problems)
    return objects


def read_batch(content: bytes) -> Batch:
    """A batch's NDJSON, checked whole: BadFile otherwise."""
    objects = _objects(content)
    header = objects[0] if objects else None
    if not isinstance(header, dict) or header.get("type") != "batch" \
            or header.get("format") != BATCH_FORMAT:
        raise BadFile([f"line 1: not a {BATCH_FORMAT} header"])
    claims, problems = [], []
    for number, item in enumerate(objects[1:], start=2):
        if not (isinstance(item, dict) and item.get("type") == "claim"
                and isinstance(item.get("claim_id"), str)
                and item.get("idempotency_key") == item["claim_id"]
                and isinstance(item.get("body"), dict)):
            problems.append(f"line {number}: not a claim line")
            continue
        claims.append(BatchClaim(item["claim_id"], item["body"]))
    if header.get("count") != len(claims):
        problems.append(f"line 1: count {header.get('count')!r} but {len(claims)} claims")
    if problems:
        raise BadFile(problems)
    return Batch(str(header.get("batch_id")), str(header.get("operator")),
                 str(header.get("created_at")), claims)


@dataclass(frozen=True, slots=True)
class Ack:
    """One claim's answer: accepted with its AMC part and reference, or rejected."""

    claim_id: str
    status: Literal["accepted", "rejected"]
    amc_cents: int | None = None
    reference: str | None = None
    code: str | None = None
    line: int = 0


@dataclass(frozen=True, slots=True)
class Acks:
    batch_id: str
    operator: str
    created_at: str
    answers: list[Ack] = field(default_factory=list)


def ack_content(acks: Acks) -> bytes:
    """The NDJSON an operator signs: the header, then one line per claim answered."""
    header = {"type": "ack", "format": ACK_FORMAT, "batch_id": acks.batch_id,
              "operator": acks.operator, "created_at": acks.created_at,
              "count": len(acks.answers)}
    lines: list[dict[str, Any]] = []
    for answer in acks.answers:
        line: dict[str, Any] = {"claim_id": answer.claim_id, "batch_id": acks.batch_id,
                                "status": answer.status}
        if answer.status == "accepted":
            line.update(amc_cents=answer.amc_cents, reference=answer.reference)
        else:
            line["code"] = answer.code
        lines.append(line)
    return ndjson([header, *lines])


_ACCEPTED_KEYS = {"claim_id", "batch_id", "status", "amc_cents", "reference"}
_REJECTED_KEYS = {"claim_id", "batch_id", "status", "code"}


def _answer(item: Any, number: int, batch_id: str) -> Ack | str:
    """One acknowledgement line, or what is wrong with it."""
    if not isinstance(item, dict):
        return f"line {number}: not a JSON object"
    claim_id = item.get("claim_id")
    if not isinstance(claim_id, str) or not CLAIM_ID.match(claim_id):
        return f"line {number}: claim_id is not a claim id"
    where = f"line {number} ({claim_id})"
    if item.get("batch_id") != batch_id:
        return f"{where}: batch_id is not the header's {batch_id}"
    status = item.get("status")
    if status == "accepted":
        cents, reference = item.get("amc_cents"), item.get("reference")
        if set(item) != _ACCEPTED_KEYS:
            return f"{where}: an accepted line has exactly {sorted(_ACCEPTED_KEYS)}"
        if not isinstance(cents, int) or isinstance(cents, bool) or not 0 <= cents <= MAX_CENTS:
            return f"{where}: amc_cents is not a whole number of cents"
        if not isinstance(reference, str) or not REFERENCE.match(reference):
            return f"{where}: reference is not an identifier"
        return Ack(claim_id, "accepted", amc_cents=cents, reference=reference, line=number)
    if status == "rejected":
        code = item.get("code")
        if set(item) != _REJECTED_KEYS:
            return f"{where}: a rejected line has exactly {sorted(_REJECTED_KEYS)}"
        if not isinstance(code, str) or not CODE.match(code):
            return f"{where}: code is not a rejection code"
        return Ack(claim_id, "rejected", code=code, line=number)
    return f"{where}: status is neither accepted nor rejected"


def read_acks(content: bytes) -> Acks:
    """An acknowledgement's NDJSON, checked whole: BadFile lists every bad line
    (a claim answered twice included)."""
    objects = _objects(content)
    header = objects[0] if objects else None
    if not isinstance(header, dict) or header.get("type") != "ack" \
            or header.get("format") != ACK_FORMAT:
        raise BadFile([f"line 1: not a {ACK_FORMAT} header"])
    batch_id = header.get("batch_id")
    if not isinstance(batch_id, str) or not BATCH_ID.match(batch_id):
        raise BadFile(["line 1: batch_id is not a batch id"])
    answers: list[Ack] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for number, item in enumerate(objects[1:], start=2):
        answer = _answer(item, number, batch_id)
        if isinstance(answer, str):
            problems.append(answer)
        elif answer.claim_id in seen:
            problems.append(f"line {number} ({answer.claim_id}): duplicated "
                            f"(already on line {seen[answer.claim_id]})")
        else:
            seen[answer.claim_id] = number
            answers.append(answer)
    if header.get("count") != len(objects) - 1:
        problems.append(f"line 1: count {header.get('count')!r} but {len(objects) - 1} lines")
    if not answers and not problems:
        problems.append("no claim answered")
    if problems:
        raise BadFile(problems)
    return Acks(batch_id, str(header.get("operator")), str(header.get("created_at")), answers)


# The operator's side ------------------------------------------------------------------

class Algorithms(JWSRegistry):
    """These JWS algorithms alone, "EdDSA" (the gateway's) without joserfc's warning that
    RFC 9864 deprecates the name; payloads up to `max_payload` bytes (joserfc's default
    is 128,000 bytes of base64url, too few for a batch or a long acknowledgement)."""

    def __init__(self, names: list[str], *, max_payload: int = 128_000 * 3 // 4) -> None:
        super().__init__(algorithms=names)
        self.names = frozenset(names)
        self.max_payload_length = _b64(max_payload)

    def get_alg(self, name: str) -> JWSAlgModel:
        if name not in self.names:
            raise ValueError(f"algorithm {name!r} not allowed")
        return self.algorithms[name]


def import_jwk(jwk: Mapping[str, Any]) -> ECKey | OKPKey | RSAKey:
    """An EC, OKP or RSA JWK as a key; ValueError (or JoseError) for anything else."""
    kty, value = jwk.get("kty"), dict(jwk)
    if kty == "EC":
        return ECKey.import_key(value)
    if kty == "OKP":
        return OKPKey.import_key(value)
    if kty == "RSA":
        return RSAKey.import_key(value)
    raise ValueError("not an EC, OKP or RSA key")


def private_key(jwk: Mapping[str, Any]) -> ECKey | OKPKey | RSAKey:
    if "d" not in jwk:
        raise ValueError("not a private JWK")
    return import_jwk(jwk)


def _gateway_key(jwks: Mapping[str, Any], kid: object) -> OKPKey:
    for entry in jwks.get("keys") or []:
        if isinstance(entry, dict) and entry.get("kid") == kid and entry.get("crv") == "Ed25519":
            try:
                return OKPKey.import_key({"kty": "OKP", "crv": "Ed25519",
                                          "x": str(entry.get("x"))})
            except (JoseError, ValueError, TypeError) as exc:
                raise BadFile(["the gateway's JWKS holds an unusable key"]) from exc
    raise BadFile(["signed by a key the gateway's JWKS does not publish"])


def open_batch(token: str, *, decryption_key: Mapping[str, Any],
               gateway_jwks: Mapping[str, Any]) -> Batch:
    """Decrypt a batch with the operator's private key, check the gateway's signature
    (EdDSA, a key of its JWKS, `typ` tp-batch+jws) and read it; BadFile otherwise."""
    verifier = Algorithms(["EdDSA"], max_payload=BATCH_JWS_PAYLOAD)
    try:
        signed = jwe.decrypt_compact(token.strip(), private_key(decryption_key),
                                     registry=batch_jwe_registry(_JWE_ALGS)).plaintext
        inner = (signed or b"").decode("ascii")
        header = jws.extract_compact(inner.encode("ascii"), registry=verifier).protected
    except ExceededSizeError as exc:
        raise BadFile([f"too large: a batch holds at most {MAX_BATCH_BYTES} bytes of "
                       f"claims ({exc})"]) from exc
    except (JoseError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise BadFile(["cannot be decrypted with this key, or altered"]) from exc
    if not isinstance(header, dict) or header.get("typ") != BATCH_TYP \
            or header.get("alg") != "EdDSA":
        raise BadFile([f"not a {BATCH_TYP} document"])
    key = _gateway_key(gateway_jwks, header.get("kid"))
    try:
        content = jws.deserialize_compact(inner, key, registry=verifier).payload
    except (JoseError, ValueError, TypeError) as exc:
        raise BadFile(["the gateway's signature does not verify: altered"]) from exc
    return read_batch(content)


def sign_acks(acks: Acks, *, signing_key: Mapping[str, Any]) -> str:
    """The acknowledgement file: a compact JWS under the operator's private key."""
    key = private_key(signing_key)
    alg = _SIG_ALGS.get((str(signing_key.get("kty")), str(signing_key.get("crv"))))
    if alg is None:
        raise ValueError("an acknowledgement key is OKP Ed25519 or EC P-256")
    header = {"alg": alg, "typ": ACK_TYP}
    return jws.serialize_compact(header, ack_content(acks), key,
                                 registry=Algorithms([alg], max_payload=ACK_JWS_PAYLOAD))
