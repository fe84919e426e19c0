"""Row ids drawn by `gateway.storage.ids`: python-ulid's text, in increasing order."""

from __future__ import annotations

import os
import time
from unittest import mock

from ulid import ULID

from gateway.storage import ids


def test_encoding_is_python_ulids_for_any_value() -> None:
    values = [0, 1, (1 << 128) - 1, 1 << 127, (1 << 80) - 1, 1 << 80]
    values += [int.from_bytes(os.urandom(16), "big") for _ in range(5000)]
    for value in values:
        assert ids.encode(value) == str(ULID.from_int(value))


def test_a_new_id_carries_the_millisecond_it_was_drawn() -> None:
    before = time.time_ns() // 1_000_000
    drawn = ULID.from_str(ids.new_ulid())
    after = time.time_ns() // 1_000_000
    assert before <= drawn.milliseconds <= after


def test_ids_drawn_in_one_millisecond_or_after_the_clock_stepped_back_still_increase() -> None:
    with mock.patch.object(ids, "_last", 0):  # the clock below is far ahead: not kept
        with mock.patch.object(ids.time, "time_ns", return_value=1_800_000_000_000_000_000):
            same_millisecond = [ids.new_ulid() for _ in range(200)]
        with mock.patch.object(ids.time, "time_ns", return_value=1_700_000_000_000_000_000):
            clock_back = [ids.new_ulid() for _ in range(3)]
    drawn = same_millisecond + clock_back
    assert drawn == sorted(drawn) and len(set(drawn)) == len(drawn)
    assert {ULID.from_str(i).milliseconds for i in same_millisecond} == {1_800_000_000_000}
    # not a counter: who saw one id cannot name the next
    values = [int(ULID.from_str(i)) for i in drawn]
    assert min(b - a for a, b in zip(values, values[1:], strict=False)) > 1 << 24
