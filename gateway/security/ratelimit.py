"""Per-caller request limits by endpoint class, shared by every instance of a deployment.

A limit is N requests per sliding minute, counted in 5 s slots: a request counts until
its slot is a minute old (60 to 65 s), so no minute ever holds more than N from one
instance. Each decision is made in memory, from what every instance had counted at
this caller's last sync (`known`) plus this instance's requests since (`inflight`
while they are being added, `pending` after): at N, 429 with the seconds until enough
slots have aged out.

A sync adds this instance's requests to the shared store (Redis when configured, else
the database: `limit_store`) and reads the window back: every `SYNC_S` for callers
with new requests and, before admitting more, as soon as a caller's unsynced requests
reach a tenth of its limit. Every other instance has therefore admitted at most a tenth
of the limit this one does not know of: with n instances, a minute holds at most
N x (1 + (n - 1) / 10) requests, nor more than the others admit between two of their
syncs. A request waits at most `SYNC_WAIT_S` in all for syncs: a store slower than
that, or one that cannot be reached, leaves each instance limiting alone, as if it were
the only one (one warning), until a sync succeeds again. While Redis is lost its store
counts in the database instead (`limit_store`), so the instances still limit together.
What a sync reads back never lowers what was known of a slot (counts only grow): when
the counting moves to another store, or Redis comes back empty after a restart, the
requests counted before still count until their slots age out. The claim path pays a
dictionary update per request and one write per `SYNC_S`, not one per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from gateway.security.limit_repository import Hit
from gateway.security.limit_store import StoreUnavailable, WindowStore

log = structlog.get_logger(__name__)
WINDOW_S = 60
SLOT_S = 5
SLOTS = WINDOW_S // SLOT_S + 1  # a window: this slot and the twelve before it
SYNC_S = 0.5
SHARE = 0.1  # of a limit, unsynced on one instance before it must sync to admit more
SYNC_WAIT_S = 1.0  # a request waits this long at most for a sync, then decides alone
MAX_TRACKED = 50_000


@dataclass(slots=True)
class _Bucket:
    name: str  # in the store: a keyed hash of class and caller (receipts: client addresses)
    known: dict[int, int] = field(default_factory=dict)  # slot -> all instances, last sync
    inflight: dict[int, int] = field(default_factory=dict)  # ours, being added
    pending: dict[int, int] = field(default_factory=dict)  # ours, not yet added
    unsynced: int = 0  # sum of pending
    last_slot: int = 0

    def total(self, oldest: int) -> int:
        return (sum(n for s, n in self.known.items() if s >= oldest)
                + sum(n for s, n in self.inflight.items() if s >= oldest)
                + sum(n for s, n in self.pending.items() if s >= oldest))

    def by_slot(self, oldest: int) -> dict[int, int]:
        counts: dict[int, int] = {}
        for part in (self.known, self.inflight, self.pending):
            for slot, n in part.items():
                if slot >= oldest:
                    counts[slot] = counts.get(slot, 0) + n
        return counts


def slot_of(now: float) -> int:
    return int(now // SLOT_S) * SLOT_S


def _at_least(read: dict[int, int], known: dict[int, int], added: dict[int, int],
              oldest: int) -> dict[int, int]:
    """Per slot of the window, what the store read back, or what was known before plus
    what was just added if that is more: only a store that lost counts (another store,
    a restarted Redis) reads back less, and a count it lost still counts."""
    merged = {slot: n for slot, n in read.items() if slot >= oldest}
    for slot in known.keys() | added.keys():
        if slot >= oldest:
            floor = known.get(slot, 0) + added.get(slot, 0)
            if floor > merged.get(slot, 0):
                merged[slot] = floor
    return merged


class RateLimiter:
    """One per process, in the context; `store=None` counts this process alone (tests, CLI)."""

    def __init__(self, per_minute: dict[str, int], store: WindowStore | None = None, *,
                 clock: Callable[[], float] = time.time,
                 namer: Callable[[str], str] = lambda raw: raw,
                 max_tracked: int = MAX_TRACKED, sync_s: float = SYNC_S,
                 sync_wait_s: float = SYNC_WAIT_S) -> None:
        self._per_minute = per_minute
        self.store = store
        self._clock = clock  # the wall clock: instances must agree on the slots
        self._namer = namer
        self._max_tracked = max_tracked
        self._sync_s = sync_s
        self.sync_wait_s = sync_wait_s  # see SYNC_WAIT_S
        self._last_sweep = float("-inf")
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._dirty: dict[tuple[str, str], _Bucket] = {}
        self._syncing: asyncio.Task[None] | None = None
        self._shared = store is not None  # False while the store cannot be reached
        self._local_polls: dict[str, int] = {}  # long-polls held here, when not shared

    async def check(self, caller: str, endpoint_class: str) -> float | None:
        """Count a request; None if allowed, else the seconds to wait before retrying."""
        limit = self._per_minute[endpoint_class]
        key = (caller, endpoint_class)
        bucket = self._buckets.get(key) or self._track(key)
        share = max(1, int(limit * SHARE))
        if self._shared and bucket.unsynced >= share:
            await self._wait_for_sync(bucket, share)
        now = self._clock()
        slot = slot_of(now)
        oldest = slot - WINDOW_S
        if bucket.total(oldest) >= limit:
            return self._wait(bucket.by_slot(oldest), limit, now)
        pending = bucket.pending
        pending[slot] = pending.get(slot, 0) + 1
        bucket.unsynced += 1
        bucket.last_slot = slot
        if len(pending) > SLOTS:  # not synced for a minute (alone, or the store is down)
            bucket.pending = {s: n for s, n in pending.items() if s >= oldest}
            bucket.unsynced = sum(bucket.pending.values())
        if self.store is not None:
            self._dirty[key] = bucket
        return None

    async def _wait_for_sync(self, bucket: _Bucket, share: int) -> None:
        """Sync until this caller's unsynced requests are under a tenth of its limit, for
        `sync_wait_s` at most in all (other requests may refill them meanwhile)."""
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + self.sync_wait_s
        while self._shared and bucket.unsynced >= share:
            left = ends_at - loop.time()
            if left <= 0:
                return
            try:  # shielded: a request that stops waiting does not cancel the others' sync
                await asyncio.wait_for(asyncio.shield(self.sync()), left)
            except TimeoutError:
                return

    def tracked(self) -> int:
        return len(self._buckets)

    def sync(self) -> asyncio.Task[None]:
        """The sync under way, or a new one: add every caller's new requests, read back."""
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.create_task(self._push())
        return self._syncing

    async def run(self, stopping: asyncio.Event) -> None:
        """Sync every `sync_s` while there are new requests, until `stopping`; a failed
        sync is the next one's business (`_push` never raises but on cancel)."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self._sync_s)
            if self.store is not None and self._dirty:
                await self.sync()

    async def take_poll_slot(self, caller: str, limit: int, ttl_s: float) -> str | None:
        """A place among the caller's `limit` concurrent long-polls (a token to give back),
        or None when all are held, on any instance."""
        holder = secrets.token_hex(8)
        if self.store is not None:
            try:
                taken = await self.store.take_slot(self._namer(f"polls:{caller}"), limit=limit,
                                                   holder=holder, now=self._clock(), ttl_s=ttl_s)
                return holder if taken else None
            except Exception as exc:  # noqa: BLE001 - counted here instead, see _unreachable
                self._unreachable(exc)
        if self._local_polls.get(caller, 0) >= limit:
            return None
        self._local_polls[caller] = self._local_polls.get(caller, 0) + 1
        return f"local:{holder}"

    async def give_poll_slot(self, caller: str, holder: str) -> None:
        if holder.startswith("local:"):
            left = self._local_polls.get(caller, 1) - 1
            if left > 0:
                self._local_polls[caller] = left
            else:
                self._local_polls.pop(caller, None)
            return
        if self.store is not None:
            try:
                await self.store.give_slot(self._namer(f"polls:{caller}"), holder=holder)
            except Exception as exc:  # noqa: BLE001 - it expires by itself
                self._unreachable(exc)

    def _track(self, key: tuple[str, str]) -> _Bucket:
        now = self._clock()
        if len(self._buckets) >= self._max_tracked and now - self._last_sweep >= 1.0:
            self._sweep(now)
        bucket = self._buckets[key] = _Bucket(self._namer(f"{key[1]}:{key[0]}"))
        return bucket

    @staticmethod
    def _wait(counts: dict[int, int], limit: int, now: float) -> float:
        """Seconds until the oldest slots holding enough requests have left the window."""
        excess = sum(counts.values()) - limit + 1
        for slot in sorted(counts):
            excess -= counts[slot]
            if excess <= 0:
                return float(max(1, math.ceil(slot + SLOT_S + WINDOW_S - now)))
        return float(WINDOW_S)  # pragma: no cover - the counts reach the limit

    async def _push(self) -> None:
        """One sync; on failure the requests stay pending for the next one."""
        batch, self._dirty = self._dirty, {}
        if self.store is None or not batch:
            return
        oldest = slot_of(self._clock()) - WINDOW_S
        hits: list[Hit] = []
        for bucket in batch.values():
            bucket.inflight, bucket.pending, bucket.unsynced = bucket.pending, {}, 0
            hits += [(bucket.name, s, n) for s, n in bucket.inflight.items() if s >= oldest]
        slots = list(range(oldest, oldest + WINDOW_S + 1, SLOT_S))
        try:
            totals = await self.store.add(hits, [b.name for b in batch.values()], slots)
        except Exception as exc:  # noqa: BLE001 - whatever the store did, limit alone
            for key, bucket in batch.items():
                for slot, n in bucket.inflight.items():
                    bucket.pending[slot] = bucket.pending.get(slot, 0) + n
                bucket.inflight, bucket.unsynced = {}, sum(bucket.pending.values())
                self._dirty[key] = bucket
            self._unreachable(exc)
            return
        for bucket in batch.values():
            bucket.known = _at_least(totals.get(bucket.name, {}), bucket.known,
                                     bucket.inflight, oldest)
            bucket.inflight = {}
        if not self._shared:
            log.info("ratelimit.store_reachable")
            self._shared = True

    def _unreachable(self, exc: Exception) -> None:
        """One warning per outage; meanwhile each instance limits alone. Anything but
        StoreUnavailable is a bug in a store: logged with its traceback, but a request
        is still answered, and limited."""
        if self._shared:
            if isinstance(exc, StoreUnavailable):
                log.warning("ratelimit.store_unreachable", error=str(exc))
            else:
                log.error("ratelimit.store_failed", exc_info=exc)
        self._shared = False

    def _sweep(self, now: float) -> None:
        """Forget callers whose last request left the window (nothing of theirs is left
        to count or to sync) and who are not being synced."""
        self._last_sweep = now
        oldest = slot_of(now) - WINDOW_S
        for key in [k for k, b in self._buckets.items()
                    if b.last_slot < oldest and not b.inflight]:
            del self._buckets[key]
            self._dirty.pop(key, None)
