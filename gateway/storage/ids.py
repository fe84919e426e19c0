"""Row ids as ULIDs: a 48-bit millisecond time, then 80 random bits, in Crockford's base32.

The text is python-ulid's, drawn without its objects: a claim queued with a receipt
draws four ids (claim, receipt, two events) inside its write group, and python-ulid's
`str(ULID())` costs ~8 µs each (a datetime, a lock, its own base32 encoder), this ~3 µs.
Within a process ids strictly increase, as python-ulid's do; but where python-ulid
draws the last id plus one in the same millisecond (or after the clock stepped back),
this adds 48 fresh random bits to it: the next claim's id is not the last one's
neighbour, for anyone who saw the last one. (Thousands of ids in one millisecond could
carry into its time part: they would still increase, a millisecond ahead.)
"""

from __future__ import annotations

import os
import threading
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # every 10 bits, as 2 characters
TIME_CHARS = 10  # the first 10 characters are the millisecond time

_lock = threading.Lock()
_last = 0


def new_ulid() -> str:
    """A new ULID's 26 characters, greater than any drawn before in this process."""
    global _last
    millisecond = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")
    with _lock:
        if millisecond > _last >> 80:
            _last = value = millisecond << 80 | random
        else:
            _last = value = _last + 1 + (random >> 32)  # its first 48 bits
    return encode(value)


def encode(value: int) -> str:
    """A 128-bit value as 26 characters (130 bits, the two leading ones zero), ten bits
    at a time: Python 3.11's `base64.b32encode` is written in Python, and as slow."""
    pairs = _PAIRS
    return (pairs[value >> 120] + pairs[value >> 110 & 1023] + pairs[value >> 100 & 1023]
            + pairs[value >> 90 & 1023] + pairs[value >> 80 & 1023] + pairs[value >> 70 & 1023]
            + pairs[value >> 60 & 1023] + pairs[value >> 50 & 1023] + pairs[value >> 40 & 1023]
            + pairs[value >> 30 & 1023] + pairs[value >> 20 & 1023] + pairs[value >> 10 & 1023]
            + pairs[value & 1023])
