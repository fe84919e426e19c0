"""The rate limiter's sharing, with a fake store: the overshoot bound, the fallback when the
store is unreachable, and the periodic sync (real stores: integration/test_shared_limits.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Collection, Sequence

import pytest
from structlog.testing import capture_logs

from gateway.security.limit_store import StoreUnavailable
from gateway.security.ratelimit import RateLimiter

pytestmark = pytest.mark.anyio
LIMIT = 100


class FakeStore:
    """Counts per bucket and slot in a dict, as Redis or the database would hold them."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, int], int] = {}
        self.down = False
        self.delay_s = 0.0  # a slow store: every add takes this long
        self.adds = 0

    async def add(self, hits: Sequence[tuple[str, int, int]], buckets: Collection[str],
                  slots: Sequence[int]) -> dict[str, dict[int, int]]:
        await asyncio.sleep(self.delay_s)  # another request may run meanwhile, as with a real store
        if self.down:
            raise StoreUnavailable("ConnectionError")
        self.adds += 1
        for bucket, slot, count in hits:
            self.counts[bucket, slot] = self.counts.get((bucket, slot), 0) + count
        return {b: {s: self.counts[b, s] for s in slots if (b, s) in self.counts}
                for b in buckets}

    async def take_slot(self, bucket: str, *, limit: int, holder: str, now: float,
                        ttl_s: float) -> bool:
        raise NotImplementedError

    async def give_slot(self, bucket: str, *, holder: str) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


def instances(store: FakeStore, count: int) -> list[RateLimiter]:
    clock = lambda: 1000.0  # noqa: E731 - every instance on the same (frozen) wall clock
    return [RateLimiter({"reads": LIMIT}, store, clock=clock) for _ in range(count)]


async def admitted(limiter: RateLimiter, attempts: int) -> int:
    return sum([await limiter.check("key", "reads") is None for _ in range(attempts)])


async def test_a_second_instance_refuses_once_the_first_used_the_limit():
    store = FakeStore()
    first, second = instances(store, 2)
    assert await admitted(first, LIMIT) == LIMIT
    late = await admitted(second, LIMIT)
    assert late <= LIMIT // 10  # what it admits before its first sync: the overshoot
    assert await admitted(second, 5) == 0
    assert await admitted(first, 5) == 0


@pytest.mark.parametrize("count", [2, 3, 5])
async def test_interleaved_instances_stay_within_the_documented_overshoot(count):
    store = FakeStore()
    limiters = instances(store, count)
    total = 0
    for limiter in itertools.islice(itertools.cycle(limiters), 4 * LIMIT):
        total += await limiter.check("key", "reads") is None
    assert LIMIT <= total <= LIMIT + (count - 1) * LIMIT // 10
    assert store.adds < total  # a sync per tenth of the limit, not one per request


async def test_concurrent_requests_share_one_sync():
    store = FakeStore()
    (limiter,) = instances(store, 1)
    answers = await asyncio.gather(*(limiter.check("key", "reads") for _ in range(2 * LIMIT)))
    assert sum(a is None for a in answers) == LIMIT
    assert store.adds <= LIMIT // 10 + 1


async def test_an_unreachable_store_leaves_the_instance_limiting_alone():
    store = FakeStore()
    store.down = True
    (limiter,) = instances(store, 1)
    with capture_logs() as logs:
        assert await admitted(limiter, 2 * LIMIT) == LIMIT  # the limit still holds, locally
    assert [e["event"] for e in logs] == ["ratelimit.store_unreachable"]  # once
    store.down = False
    with capture_logs() as logs:
        await limiter.sync()
    assert [e["event"] for e in logs] == ["ratelimit.store_reachable"]
    assert sum(store.counts.values()) == LIMIT  # what it admitted alone is shared now


async def test_a_store_slower_than_the_wait_leaves_each_request_deciding_alone():
    store = FakeStore()
    store.delay_s = 0.3
    first, second = instances(store, 2)
    first.sync_wait_s = second.sync_wait_s = 0.05
    assert await admitted(first, LIMIT) == LIMIT
    started = asyncio.get_running_loop().time()
    late = await admitted(second, 12)  # its syncs never answer within the wait
    waited = asyncio.get_running_loop().time() - started
    assert late == 12  # it knew nothing of the first instance's requests: decided alone
    assert waited < 12 * 0.3  # each request waited at most the wait, not the store
    second.sync_wait_s = 5.0  # the same slow store, waited for: the shared limit holds
    await second.sync()
    assert await admitted(second, 5) == 0


async def test_new_requests_are_synced_within_the_interval():
    store = FakeStore()
    limiter = RateLimiter({"reads": LIMIT}, store, clock=lambda: 1000.0, sync_s=0.05)
    stopping = asyncio.Event()
    task = asyncio.create_task(limiter.run(stopping))
    assert await admitted(limiter, 3) == 3  # under a tenth: no sync on the request path
    assert store.adds == 0
    await asyncio.sleep(0.2)
    assert sum(store.counts.values()) == 3
    stopping.set()
    await task
