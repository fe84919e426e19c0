"""Per-key request limits by endpoint class: a sliding one-minute window in memory.

The first N requests of a burst pass; then 429 until the oldest request of the
window is a minute old. Each instance counts alone (shared limits need Redis).
Windows that have gone quiet are swept once many callers are tracked, so a flood
of distinct callers (public receipt lookups are keyed by address) stays bounded.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

WINDOW_S = 60.0
MAX_TRACKED = 50_000


class RateLimiter:
    def __init__(self, per_minute: dict[str, int], clock: Callable[[], float] = time.monotonic,
                 *, max_tracked: int = MAX_TRACKED):
        self._per_minute = per_minute
        self._clock = clock
        self._max_tracked = max_tracked
        self._last_sweep = float("-inf")
        self._seen: dict[tuple[str, str], deque[float]] = {}

    def check(self, key_id: str, endpoint_class: str) -> float | None:
        """Record a request; None if allowed, else the seconds to wait before retrying."""
        limit = self._per_minute[endpoint_class]
        now = self._clock()
        if len(self._seen) >= self._max_tracked and now - self._last_sweep >= 1.0:
            self._sweep(now)
        window = self._seen.setdefault((key_id, endpoint_class), deque())
        while window and window[0] <= now - WINDOW_S:
            window.popleft()
        if len(window) >= limit:
            return max(1.0, math.ceil(window[0] + WINDOW_S - now))
        window.append(now)
        return None

    def tracked(self) -> int:
        return len(self._seen)

    def _sweep(self, now: float) -> None:
        """Forget callers whose last request left the window."""
        self._last_sweep = now
        for caller in [c for c, w in self._seen.items() if not w or w[-1] <= now - WINDOW_S]:
            del self._seen[caller]
