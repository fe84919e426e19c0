"""The harvesting pattern of 2024: one key looking up many distinct people.

A pharmacy checks the rights of the people at its counter: a few dozen an hour.
A stolen key used to harvest a population checks thousands. Per key, the distinct
beneficiary hashes of the last hour are counted in memory (bounded: a capped
number of hashes per key and of keys); above the threshold each new person counts
in `gateway_rights_unusual_total{key_id}` and a `rights.unusual_volume` warning is
logged once per episode, with the key id and the count only.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import structlog

from gateway.metrics import RIGHTS_UNUSUAL

log = structlog.get_logger(__name__)
WINDOW_S = 3600.0
MAX_KEYS = 10_000


class _KeyWindow:
    __slots__ = ("alerted", "seen")

    def __init__(self) -> None:
        self.seen: OrderedDict[str, float] = OrderedDict()  # hash -> last seen, oldest first
        self.alerted = False


class LookupWatch:
    """Distinct people per key per sliding hour; one instance per process, in the context."""

    def __init__(self, threshold: int, *, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS) -> None:
        self.threshold = threshold
        self._window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._cap = max(4 * threshold, 256)  # past this many, the count is "at least"
        self._keys: OrderedDict[str, _KeyWindow] = OrderedDict()  # least recently active first

    def note_rights_lookup(self, key_id: str, beneficiary_hash: str) -> bool:
        """Record a lookup; True when this key's distinct people this hour exceed the threshold."""
        now = self._clock()
        window = self._window_for(key_id)
        window.seen[beneficiary_hash] = now
        window.seen.move_to_end(beneficiary_hash)
        while window.seen and next(iter(window.seen.values())) <= now - self._window_s:
            window.seen.popitem(last=False)
        while len(window.seen) > self._cap:
            window.seen.popitem(last=False)
        count = len(window.seen)
        if count <= self.threshold:
            window.alerted = False
            return False
        RIGHTS_UNUSUAL.labels(key_id).inc()
        if not window.alerted:
            window.alerted = True
            log.warning("rights.unusual_volume", key_id=key_id, distinct_beneficiaries=count,
                        window_s=int(self._window_s), threshold=self.threshold)
        return True

    def distinct(self, key_id: str) -> int:
        """Distinct people this key looked up within the window (for tests and the console)."""
        window = self._keys.get(key_id)
        if window is None:
            return 0
        cutoff = self._clock() - self._window_s
        return sum(1 for seen_at in window.seen.values() if seen_at > cutoff)

    def _window_for(self, key_id: str) -> _KeyWindow:
        window = self._keys.get(key_id)
        if window is None:
            window = self._keys[key_id] = _KeyWindow()
            while len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        self._keys.move_to_end(key_id)
        return window
