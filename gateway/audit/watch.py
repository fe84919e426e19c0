"""The trail's integrity as the console's audit page shows it, without reading it whole per view.

The full check (`heads.verify_trail`, what `gateway audit verify` runs) reads every entry:
its hash, its link to the one before, its seal, and every signed head. There is an entry per
claim, so that read grows with the gateway's history (~14 s at 300,000 entries), and the
page ran it on every view.

Here the full walk runs in the background, five minutes after start (or at the first view,
if sooner) and every FULL_EVERY_S, one chunk of entries per read with a rest after each (it
takes at most a fifth of a core from the claims), and leaves a checkpoint:
the last entry it verified, with its hash. From then on a view, and the background every
TAIL_EVERY_S, checks only what came after:
- that the checkpoint entry still stands with that hash: cutting the trail below it, or
  re-chaining it (rewritten entries re-hashed), changes or removes it;
- every entry after it (hash, link, seal), chained from the checkpoint's hash; the
  checkpoint then moves to the last of them;
- the heads signed since (signature, and the hash of the entry each covers).
What only the next full walk sees: an old entry's content altered with its stored hash left
as it was, and an old head altered. The page says when the last full walk began.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial

import structlog

from gateway.audit import repository
from gateway.audit.heads import HeadKeys, check_heads
from gateway.audit.trail import GENESIS, AuditLog, Verification, walk
from gateway.storage.db import Database
from gateway.storage.deployment import read_deployment_id
from gateway.storage.health import DatabaseUnavailable
from gateway.storage.models import AuditEntry, utcnow
from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)
CHUNK = 1_000  # entries per read of a walk: ~35 ms of CPU
REST = 4.0  # after each chunk, a rest this many times as long: a fifth of a core at most
FULL_EVERY_S = 3600.0
TAIL_EVERY_S = 30.0
FIRST_WALK_AFTER_S = 300.0  # not while a starting gateway warms up (or a view asks first)
VIEW_WAIT_S = 2.0  # a view waits this long for a walk under way, then says it is under way


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Entries 1 to `entry_id` verified, `entry_id` with `entry_hash`; heads to `head_id`."""

    entry_id: int
    entry_hash: str
    head_id: int
    full_at: datetime  # when the last full walk began: what it read was as of then


@dataclass(frozen=True, slots=True)
class TrailReport:
    """What a view shows: the verdict (None until a first full walk ends) and its age."""

    result: Verification | None
    full_at: datetime | None
    walking: bool


class TrailWatch:
    """This process's knowledge of the trail: a checkpoint, or the first broken entry."""

    def __init__(self, db: Database, audit_log: AuditLog, keys: Callable[[], HeadKeys]) -> None:
        self._db, self._audit_log, self._keys = db, audit_log, keys
        self._head_keys: HeadKeys | None = None
        self._checkpoint: Checkpoint | None = None
        self._broken: Verification | None = None
        self._full_at: datetime | None = None
        self._walk: asyncio.Task[None] | None = None
        self._tail_lock = asyncio.Lock()

    @property
    def keys(self) -> HeadKeys:
        if self._head_keys is None:
            self._head_keys = self._keys()
        return self._head_keys

    async def view(self) -> TrailReport:
        """The trail's state now: the tail checked from the checkpoint; before the first
        full walk has ended, that walk started (if it is not) and waited for a moment."""
        if self._checkpoint is None and self._broken is None:
            walking = self.start_full_walk()
            try:
                await asyncio.wait_for(asyncio.shield(walking), timeout=VIEW_WAIT_S)
            except TimeoutError:
                return TrailReport(None, None, walking=True)
        await self.check_tail()
        return TrailReport(self._broken or self._verified(), self._full_at,
                           walking=self._walk is not None and not self._walk.done())

    def start_full_walk(self) -> asyncio.Task[None]:
        if self._walk is None or self._walk.done():
            self._walk = asyncio.create_task(self.full_walk())
        return self._walk

    async def full_walk(self) -> None:
        """Every entry and every head, a chunk at a time; then the checkpoint is its end."""
        began, found_before = utcnow(), self._broken
        heads, deployment = await self._db.read(
            lambda session: (repository.heads(session), read_deployment_id(session)))
        named = {head.entry_id for head in heads}
        hashes: dict[int, str] = {}
        last_id, last_hash, checked = 0, GENESIS, 0
        while True:
            started = time.monotonic()
            # read and hashed in a worker thread: not the event loop's (~35 ms a chunk)
            chunk, result = await self._db.read(partial(
                self._walk_chunk, after=(last_id, last_hash), checked=checked))
            if not result.ok:
                return self._settle_walk(result, began, found_before)
            hashes.update((entry.id or 0, entry.entry_hash) for entry in chunk
                          if entry.id in named)
            if chunk:
                last_id, last_hash = chunk[-1].id or 0, chunk[-1].entry_hash
                checked = result.checked
            if len(chunk) < CHUNK:
                break
            # the claims' turn: the walk holds the GIL while it hashes (~10 s at 300,000)
            await asyncio.sleep((time.monotonic() - started) * REST)
        hashes[last_id] = last_hash
        # a signature a head, ~100,000 heads a year: off the event loop too
        found = await asyncio.to_thread(check_heads, heads, hashes, self.keys, deployment)
        if found is not None:
            return self._settle_walk(_head_broken(found), began, found_before)
        head_id = max((head.id or 0 for head in heads), default=0)
        self._settle_walk(None, began, found_before,
                          Checkpoint(last_id, last_hash, head_id, began))

    def _walk_chunk(self, session: UnitOfWork, *, after: tuple[int, str],
                    checked: int) -> tuple[list[AuditEntry], Verification]:
        chunk = repository.entries_after(session, after[0], CHUNK)
        return chunk, walk(chunk, self._audit_log.seal, after=after, checked=checked)

    def _settle_walk(self, broken: Verification | None, began: datetime,
                     found_before: Verification | None,
                     checkpoint: Checkpoint | None = None) -> None:
        """The walk's verdict, unless a tail check found a break while it ran (in entries
        the walk may have read before they were altered): that one stands."""
        if self._broken is not None and self._broken is not found_before:
            broken = self._broken if broken is None else min(
                broken, self._broken, key=lambda found: found.first_broken_id or 0)
        self._broken, self._checkpoint, self._full_at = broken, checkpoint, began
        if broken is not None:
            log.error("audit.trail_broken", entry_id=broken.first_broken_id)

    async def check_tail(self) -> None:
        """What came after the checkpoint; the checkpoint moves to its end."""
        async with self._tail_lock:
            checkpoint = self._checkpoint
            if checkpoint is None or self._broken is not None:
                return
            broken, moved = await self._db.read(lambda session: self._tail(session, checkpoint))
            if self._checkpoint is checkpoint:  # no full walk ended meanwhile
                self._broken, self._checkpoint = broken, moved

    def _tail(self, session: UnitOfWork, checkpoint: Checkpoint,
              ) -> tuple[Verification | None, Checkpoint]:
        stands = repository.hash_of(session, checkpoint.entry_id)
        if stands != checkpoint.entry_hash:
            how = "missing: deleted" if stands is None else "rewritten: its hash changed"
            return Verification(False, checkpoint.entry_id - 1, checkpoint.entry_id,
                                f"{how} since the full check of "
                                f"{checkpoint.full_at.isoformat(timespec='seconds')}"), checkpoint
        entries = repository.entries_after(session, checkpoint.entry_id)
        result = walk(entries, self._audit_log.seal,
                      after=(checkpoint.entry_id, checkpoint.entry_hash),
                      checked=checkpoint.entry_id)
        if not result.ok:
            return result, checkpoint
        if entries:
            checkpoint = replace(checkpoint, entry_id=entries[-1].id or 0,
                                 entry_hash=entries[-1].entry_hash)
        heads = repository.heads_after(session, checkpoint.head_id)
        if not heads:
            return None, checkpoint
        hashes = repository.hashes_of(session, {head.entry_id for head in heads})
        hashes[checkpoint.entry_id] = checkpoint.entry_hash
        found = check_heads(heads, hashes, self.keys, read_deployment_id(session))
        if found is not None:
            return _head_broken(found), checkpoint
        return None, replace(checkpoint, head_id=max(head.id or 0 for head in heads))

    def _verified(self) -> Verification:
        checkpoint = self._checkpoint
        return Verification(True, checkpoint.entry_id if checkpoint else 0)

    async def run(self, stopping: asyncio.Event, *, full_every_s: float = FULL_EVERY_S,
                  tail_every_s: float = TAIL_EVERY_S,
                  first_after_s: float = FIRST_WALK_AFTER_S) -> None:
        """A full walk `first_after_s` after start and every `full_every_s`, the tail
        every `tail_every_s`."""
        loop = asyncio.get_running_loop()
        next_full = loop.time() + first_after_s
        while not stopping.is_set():
            try:
                if loop.time() >= next_full:
                    next_full = loop.time() + full_every_s
                    await self.start_full_walk()
                else:
                    await self.check_tail()
            except DatabaseUnavailable:
                pass  # logged once by the database's health; checked again later
            try:
                await asyncio.wait_for(stopping.wait(), timeout=tail_every_s)
            except TimeoutError:
                pass


def _head_broken(found: tuple[int, str]) -> Verification:
    entry_id, problem = found
    return Verification(False, entry_id - 1, entry_id, problem)
