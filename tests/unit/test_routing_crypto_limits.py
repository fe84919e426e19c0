"""Insurer routing, field encryption and the per-key rate limiter."""

from __future__ import annotations

import pytest

from adapters.registry import InsurerRouter, RoutingError
from gateway.security.crypto import Cipher, DecryptionError
from gateway.security.keyring import KeyRing
from gateway.security.ratelimit import RateLimiter


def test_exact_beats_prefix_and_longer_prefix_beats_shorter():
    router = InsurerRouter({"a": ["80*", "801234567"], "b": ["8012*"], "c": ["9*"]})
    assert router.route("801234567") == "a"      # exact
    assert router.route("801299999") == "b"      # longer prefix
    assert router.route("809999999") == "a"      # shorter prefix
    assert router.route("912345678") == "c"
    assert router.route("701234567") is None


def test_a_pattern_under_two_operators_is_refused():
    with pytest.raises(RoutingError, match="'80\\*'"):
        InsurerRouter({"a": ["80*"], "b": ["80*"]})


def ring(data: bytes, previous: tuple[bytes, ...] = ()) -> KeyRing:
    return KeyRing(data_key=data, previous_data_keys=previous, index_key=b"i" * 32,
                   signing_key=b"s" * 32)


def test_encryption_round_trip_is_bound_to_its_record():
    cipher = Cipher(ring(b"k" * 32))
    blob = cipher.encrypt(b"185077511512396", context="claims:clm_1")
    assert b"185077511512396" not in blob
    assert cipher.decrypt(blob, context="claims:clm_1") == b"185077511512396"
    with pytest.raises(DecryptionError, match="altered or bound"):
        cipher.decrypt(blob, context="claims:clm_2")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionError):
        cipher.decrypt(tampered, context="claims:clm_1")


def test_rotated_data_key_still_reads_old_blobs():
    old = Cipher(ring(b"o" * 32))
    blob = old.encrypt(b"x", context="c")
    rotated = Cipher(ring(b"n" * 32, previous=(b"o" * 32,)))
    assert rotated.decrypt(blob, context="c") == b"x"
    assert rotated.encrypt(b"x", context="c")[1:5] != blob[1:5]  # new blobs on the new key
    with pytest.raises(DecryptionError, match="unknown data key"):
        Cipher(ring(b"n" * 32)).decrypt(blob, context="c")


def test_index_is_keyed_and_stable():
    a, b = Cipher(ring(b"k" * 32)), Cipher(ring(b"k" * 32))
    assert a.index("nir", "185077511512396") == b.index("nir", "185077511512396")
    other = Cipher(KeyRing(b"k" * 32, (), b"j" * 32, b"s" * 32))
    assert other.index("nir", "185077511512396") != a.index("nir", "185077511512396")


@pytest.mark.anyio
async def test_rate_limiter_lets_a_burst_pass_then_waits_for_the_window():
    now = [1000.0]
    limiter = RateLimiter({"rights": 3}, clock=lambda: now[0])
    assert [await limiter.check("k", "rights") for _ in range(3)] == [None, None, None]
    # counted in 5 s slots: the slot [1000, 1005) holding the burst leaves the minute at 1065
    assert await limiter.check("k", "rights") == 65
    assert await limiter.check("other", "rights") is None
    now[0] += 30
    assert await limiter.check("k", "rights") == 35
    now[0] += 34.5
    assert await limiter.check("k", "rights") == 1
    now[0] += 0.5
    assert await limiter.check("k", "rights") is None
    assert [await limiter.check("k", "rights") for _ in range(3)] == [None, None, 65]
