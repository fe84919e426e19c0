"""Receipt tokens: EdDSA compact JWS checked against the JWKS, tamper-proof, rotatable."""

from __future__ import annotations

import base64
import json
import os
import string
import warnings
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import respx
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jws
from joserfc.errors import SecurityWarning, UnsupportedAlgorithmError
from joserfc.jwk import OctKey
from typer.testing import CliRunner

from gateway.cli.receipts import receipt_app
from gateway.receipts.signing import (
    _REGISTRY,
    REQUIRED_FIELDS,
    InvalidReceipt,
    ReceiptSigner,
    key_id,
    verify,
)

SEED = bytes(range(32))
OLD_SEED = bytes(range(100, 132))
OTHER_SEED = bytes(range(200, 232))
ISSUER = "https://gateway.example"
IAT = 1_795_000_000
EXP = IAT + 90 * 86_400
B64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def payload(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "rid": "rcp_01J0000000000000000000000", "claim_id": "clm_01J0000000000000000000000",
        "finess": "330001231", "invoice_number": "000123", "operator": "opera",
        "insurer_number": "801234567", "amc_cents": 280, "patient_due_cents": 0,
        "basis": "card", "iat": IAT, "exp": EXP, "iss": ISSUER,
    }
    base.update(changes)
    return base


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def forged(header: dict[str, object], body: dict[str, object], signature: bytes = b"") -> str:
    """A token written by hand: what an attacker sends, not how we sign."""
    return ".".join([b64url(json.dumps(header).encode()), b64url(json.dumps(body).encode()),
                     b64url(signature)])


def at(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


@pytest.fixture
def signer() -> ReceiptSigner:
    return ReceiptSigner(SEED)


@pytest.fixture
def token(signer: ReceiptSigner) -> str:
    return signer.sign(payload())


def test_round_trip_with_the_published_jwks(signer: ReceiptSigner, token: str) -> None:
    header_segment, payload_segment, signature_segment = token.split(".")
    assert json.loads(b64url_decode(header_segment)) == {"alg": "EdDSA", "kid": signer.kid,
                                                         "typ": "JWT"}
    assert json.loads(b64url_decode(payload_segment)) == payload()
    assert len(b64url_decode(signature_segment)) == 64

    jwks = json.loads(json.dumps(signer.jwks()))  # as a client gets it over HTTP
    (key,) = jwks["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["alg"] == "EdDSA"
    assert key["use"] == "sig" and key["kid"] == signer.kid
    assert key_id(b64url_decode(key["x"])) == signer.kid
    assert "d" not in key

    receipt = verify(token, jwks, now=at(IAT + 60), issuer=ISSUER)
    assert receipt.payload == payload()
    assert receipt.kid == signer.kid
    assert receipt.expired is False


def test_signing_is_deterministic_and_the_kid_stable(signer: ReceiptSigner) -> None:
    assert signer.sign(payload()) == ReceiptSigner(SEED).sign(payload())
    assert signer.kid == ReceiptSigner(SEED).kid != ReceiptSigner(OTHER_SEED).kid
    assert len(signer.kid) == 16


@given(st.dictionaries(st.sampled_from(("basis", "invoice_number", "operator", "iss")),
                       st.text(max_size=40)))
@settings(max_examples=40, deadline=None)
def test_a_receipt_is_joserfcs_own_compact_jws_byte_for_byte(changes: dict[str, str]) -> None:
    """The signer builds the compact JWS itself (its header encoded once); Ed25519 being
    deterministic, the token must be the one joserfc makes of the same header and payload,
    for any text, non-ASCII included."""
    signer = ReceiptSigner(SEED)
    body = payload(**changes)
    expected = jws.serialize_compact(
        {"alg": "EdDSA", "kid": signer.kid, "typ": "JWT"},
        json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode(),
        signer._signing_key, registry=_REGISTRY)
    assert signer.sign(body) == expected


def test_the_signing_registry_allows_eddsa_alone_and_without_a_warning() -> None:
    """joserfc flags EdDSA as deprecated (RFC 9864); the contract mandates it, so the
    signer's own registry allows it without warning: signing needs no warnings filter
    (process-wide, not thread-safe) around each call."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _REGISTRY.get_alg("EdDSA").name == "EdDSA"
    for other in ("HS256", "RS256", "none", "ES256"):
        with pytest.raises(UnsupportedAlgorithmError):
            _REGISTRY.get_alg(other)


def test_signer_refuses_an_incomplete_payload(signer: ReceiptSigner) -> None:
    body = payload()
    del body["rid"]
    with pytest.raises(ValueError, match="rid"):
        signer.sign(body)


def test_every_altered_character_is_refused(signer: ReceiptSigner, token: str) -> None:
    jwks = signer.jwks()
    for position, char in enumerate(token):
        if char == ".":
            replacement = "A"  # a separator turned into data: wrong segment count
        else:
            replacement = B64URL[(B64URL.index(char) + 1) % 64]
        altered = token[:position] + replacement + token[position + 1:]
        with pytest.raises(InvalidReceipt):
            verify(altered, jwks, now=at(IAT))

    # The last character of a segment whose length is not a multiple of 4 carries unused
    # low bits (the signature's 86th character carries 2 data bits and 4 padding bits). A
    # lenient decoder maps several characters to the same bytes there, so the "+1" flip
    # above may leave the decoded bytes unchanged. joserfc decodes strictly (non-zero
    # padding bits are an error), so we check every alternative at those positions: any
    # other string is refused, even one that decodes to the same bytes.
    ends = [i - 1 for i, char in enumerate(token) if char == "."] + [len(token) - 1]
    for position in ends:
        for replacement in B64URL.replace(token[position], ""):
            altered = token[:position] + replacement + token[position + 1:]
            with pytest.raises(InvalidReceipt):
                verify(altered, jwks, now=at(IAT))


def test_key_rotation_keeps_old_receipts_verifying() -> None:
    old_token = ReceiptSigner(OLD_SEED).sign(payload())
    rotated = ReceiptSigner(SEED, previous_seeds=[OLD_SEED])
    kids = [key["kid"] for key in rotated.jwks()["keys"]]
    assert kids == [rotated.kid, ReceiptSigner(OLD_SEED).kid]  # current first
    assert verify(old_token, rotated.jwks(), now=at(IAT)).kid == kids[1]
    assert verify(rotated.sign(payload()), rotated.jwks(), now=at(IAT)).kid == kids[0]

    stranger = ReceiptSigner(OTHER_SEED).sign(payload())
    with pytest.raises(InvalidReceipt, match="unknown key"):
        verify(stranger, rotated.jwks(), now=at(IAT))


def test_a_kid_pointing_at_another_key_fails_the_signature() -> None:
    rotated = ReceiptSigner(SEED, previous_seeds=[OLD_SEED])
    old_token = ReceiptSigner(OLD_SEED).sign(payload())
    _, body, signature = old_token.split(".")
    header = b64url(json.dumps({"alg": "EdDSA", "kid": rotated.kid, "typ": "JWT"}).encode())
    with pytest.raises(InvalidReceipt, match="signature"):
        verify(f"{header}.{body}.{signature}", rotated.jwks(), now=at(IAT))


def test_alg_none_is_refused(signer: ReceiptSigner) -> None:
    unsigned = forged({"alg": "none", "kid": signer.kid, "typ": "JWT"}, payload())
    with pytest.raises(InvalidReceipt, match="algorithm"):
        verify(unsigned, signer.jwks(), now=at(IAT))


def test_hs256_keyed_with_the_public_key_is_refused(signer: ReceiptSigner) -> None:
    public_x = signer.jwks()["keys"][0]["x"]
    hmac_key = OctKey.import_key(b64url_decode(public_x))
    header = {"alg": "HS256", "kid": signer.kid, "typ": "JWT"}
    confused = jws.serialize_compact(header, json.dumps(payload()), hmac_key,
                                     algorithms=["HS256"])
    with pytest.raises(InvalidReceipt, match="algorithm"):
        verify(confused, signer.jwks(), now=at(IAT))


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_a_missing_payload_field_is_refused(signer: ReceiptSigner, field: str) -> None:
    body = payload()
    del body[field]
    # Signed with our own key, bypassing the signer's own check of the payload.
    header = {"alg": "EdDSA", "kid": signer.kid, "typ": "JWT"}
    key = signer._signing_key  # noqa: SLF001 - a validly signed but incomplete receipt
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)
        incomplete = jws.serialize_compact(header, json.dumps(body), key, algorithms=["EdDSA"])
    with pytest.raises(InvalidReceipt, match=f"missing field {field}"):
        verify(incomplete, signer.jwks(), now=at(IAT))


def test_expiry_is_reported_not_refused(signer: ReceiptSigner, token: str) -> None:
    assert verify(token, signer.jwks(), now=at(EXP - 1)).expired is False
    assert verify(token, signer.jwks(), now=at(EXP)).expired is True
    late = verify(token, signer.jwks(), now=at(EXP + 86_400))
    assert late.expired is True and late.payload["rid"] == payload()["rid"]


def test_issuer_mismatch_is_refused(signer: ReceiptSigner, token: str) -> None:
    with pytest.raises(InvalidReceipt, match="issuer"):
        verify(token, signer.jwks(), now=at(IAT), issuer="https://phishing.example")


@pytest.mark.parametrize("bad", [
    "", ".", "..", "a.b", "a.b.c.d", "!!!.###.$$$", "é.é.é", "A" * 100_000,
    b64url(b'["alg"]') + ".e30." + "A" * 86,
    b64url(b'"alg"') + ".e30." + "A" * 86,
    b64url(b"not json") + ".e30." + "A" * 86,
])
def test_malformed_tokens_raise_only_invalid_receipt(signer: ReceiptSigner, bad: str) -> None:
    with pytest.raises(InvalidReceipt):
        verify(bad, signer.jwks())


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=B64URL + ".", max_size=300) | st.text(max_size=100))
def test_arbitrary_strings_raise_only_invalid_receipt(text: str) -> None:
    with pytest.raises(InvalidReceipt):
        verify(text, ReceiptSigner(SEED).jwks())


# --- the command line -----------------------------------------------------------------

runner = CliRunner()


def seed_b64(seed: bytes) -> str:
    return base64.b64encode(seed).decode()


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'public_url = "{ISSUER}"\ndata_dir = "{tmp_path / "var"}"\n[security]\n'
        f'data_key = "{seed_b64(bytes(32))}"\nindex_key = "{seed_b64(bytes([7]) * 32)}"\n'
        f'signing_key = "{seed_b64(SEED)}"\nprevious_signing_keys = ["{seed_b64(OLD_SEED)}"]\n'
    )
    return path


def live_payload() -> dict[str, object]:
    now = int(datetime.now(UTC).timestamp())
    return payload(iat=now, exp=now + 86_400)


def test_cli_valid_token_prints_the_payload(config: Path) -> None:
    body = live_payload()
    result = runner.invoke(receipt_app, ["verify", ReceiptSigner(SEED).sign(body),
                                         "--config", str(config)])
    assert result.exit_code == 0, result.output
    *json_lines, status = result.stdout.strip().splitlines()
    assert json.loads("\n".join(json_lines)) == body
    assert status == "status: valid"


def test_cli_reports_an_expired_receipt_as_authentic(config: Path) -> None:
    past = 1_700_000_000
    old = ReceiptSigner(OLD_SEED).sign(payload(iat=past, exp=past + 86_400))  # previous key
    result = runner.invoke(receipt_app, ["verify", old, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == (
        "status: expired (authentic, past its expiry)")


def test_cli_altered_token_exits_1(config: Path) -> None:
    token = ReceiptSigner(SEED).sign(live_payload())
    head, body, signature = token.split(".")
    altered = f"{head}.{body}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"
    result = runner.invoke(receipt_app, ["verify", altered, "--config", str(config)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: invalid receipt: ")


def test_cli_with_a_jwks_file(tmp_path: Path) -> None:
    signer = ReceiptSigner(OTHER_SEED)
    jwks_path = tmp_path / "jwks.json"
    jwks_path.write_text(json.dumps(signer.jwks()))
    token = signer.sign(live_payload())
    result = runner.invoke(receipt_app, ["verify", token, "--jwks", str(jwks_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("status: valid")

    foreign = ReceiptSigner(SEED).sign(live_payload())
    result = runner.invoke(receipt_app, ["verify", foreign, "--jwks", str(jwks_path)])
    assert result.exit_code == 1
    assert "unknown key" in result.stderr


def test_cli_unreadable_jwks_exits_1(tmp_path: Path) -> None:
    token = ReceiptSigner(SEED).sign(live_payload())
    missing = runner.invoke(receipt_app, ["verify", token, "--jwks", str(tmp_path / "none")])
    assert missing.exit_code == 1 and missing.stderr.startswith("error: jwks: ")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    result = runner.invoke(receipt_app, ["verify", token, "--jwks", str(garbage)])
    assert result.exit_code == 1 and "not valid JSON" in result.stderr


@respx.mock
def test_cli_fetches_a_jwks_url() -> None:
    signer = ReceiptSigner(OTHER_SEED)
    route = respx.get("https://gateway.example/.well-known/jwks.json").mock(
        return_value=httpx.Response(200, json=signer.jwks()))
    result = runner.invoke(receipt_app, ["verify", signer.sign(live_payload()), "--jwks",
                                         "https://gateway.example/.well-known/jwks.json"])
    assert route.called
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("status: valid")
