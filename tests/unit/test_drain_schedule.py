"""Where a drain batch starts on the operator's shared schedule."""

from __future__ import annotations

from datetime import timedelta

from gateway.queue.repository import CATCH_UP_S, drain_start
from gateway.storage.models import utcnow


def test_a_first_drain_starts_now():
    now = utcnow()
    assert drain_start(None, now) == now


def test_a_schedule_ahead_is_kept():
    now = utcnow()
    assert drain_start(now + timedelta(seconds=3), now) == now + timedelta(seconds=3)


def test_a_schedule_a_little_behind_catches_up():
    now = utcnow()
    behind = now - timedelta(seconds=CATCH_UP_S / 2)
    assert drain_start(behind, now) == behind


def test_a_schedule_left_by_an_earlier_drain_never_bursts_the_backlog():
    now = utcnow()
    assert drain_start(now - timedelta(seconds=CATCH_UP_S + 0.01), now) == now
    assert drain_start(now - timedelta(hours=2), now) == now
