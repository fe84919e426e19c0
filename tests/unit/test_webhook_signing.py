"""Webhook signatures match the Standard Webhooks reference algorithm, byte for byte."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from gateway.settings import WebhookSettings
from gateway.webhooks.signing import InvalidSignature, decode_secret, sign, signed_headers, verify

KEY = bytes(range(32))
SECRET = "whsec_" + base64.b64encode(KEY).decode()
MSG_ID = "evt_01J00000000000000000000000"
TIMESTAMP = 1_764_000_000
BODY = b'{"type":"claim.accepted","data":{"id":"evt_01J","claim_id":"clm_01J"}}'


def reference_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The spec, written out independently: HMAC-SHA256 over "{id}.{timestamp}.{body}"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    to_sign = msg_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode()


def test_signature_matches_the_reference_computation():
    assert decode_secret(SECRET) == KEY
    assert sign(KEY, MSG_ID, TIMESTAMP, BODY) == reference_signature(SECRET, MSG_ID, TIMESTAMP,
                                                                     BODY)


def test_signature_matches_the_specs_published_example():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign(decode_secret(secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                     b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_headers_verify_and_any_altered_byte_fails():
    headers = signed_headers(KEY, MSG_ID, TIMESTAMP, BODY)
    assert headers["webhook-id"] == MSG_ID and headers["webhook-timestamp"] == str(TIMESTAMP)
    verify(KEY, headers, BODY, now=TIMESTAMP)
    for index in range(len(BODY)):
        altered = bytearray(BODY)
        altered[index] ^= 0x01
        with pytest.raises(InvalidSignature):
            verify(KEY, headers, bytes(altered), now=TIMESTAMP)
    for name in headers:
        value = headers[name]
        for index in range(len(value)):
            changed = value[:index] + chr(ord(value[index]) ^ 0x01) + value[index + 1:]
            with pytest.raises(InvalidSignature):
                verify(KEY, {**headers, name: changed}, BODY, now=TIMESTAMP)
    with pytest.raises(InvalidSignature):
        verify(bytes(32), headers, BODY, now=TIMESTAMP)


def test_verification_accepts_one_of_several_signatures_and_rejects_stale_ones():
    headers = signed_headers(KEY, MSG_ID, TIMESTAMP, BODY)
    rotated = {**headers, "webhook-signature": "v1,b2xk " + headers["webhook-signature"]}
    verify(KEY, rotated, BODY, now=TIMESTAMP)
    with pytest.raises(InvalidSignature):
        verify(KEY, headers, BODY, now=TIMESTAMP + 301)


@pytest.mark.parametrize("secret", ["", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_!!!",
                                    "whsec_" + base64.b64encode(b"short").decode()])
def test_bad_secrets_are_refused(secret):
    with pytest.raises(ValueError, match="webhook"):
        decode_secret(secret)


def test_url_safe_unpadded_secrets_are_accepted():
    key = bytes([251] * 24)
    assert decode_secret("whsec_" + base64.urlsafe_b64encode(key).decode().rstrip("=")) == key


def test_settings_refuse_bad_entries():
    good = {"finess": "330001231", "url": "https://pharmacy.example/hooks", "secret": SECRET}
    assert WebhookSettings(**good).allow_private is False
    for bad in ({"url": "ftp://pharmacy.example/"}, {"url": "https:///nohost"},
                {"secret": "not-a-secret"}, {"finess": "12"}, {"extra": 1}):
        with pytest.raises(ValueError):
            WebhookSettings(**{**good, **bad})
