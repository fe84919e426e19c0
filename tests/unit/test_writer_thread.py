"""The thread that runs write groups: outcomes back to the caller, in order, on one
thread; a cancelled caller still waits for its call; an idle thread ends and the next
call starts another."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from gateway.storage import writer
from gateway.storage.writer import WriterThread

pytestmark = pytest.mark.anyio

REQUEST = contextvars.ContextVar("request", default="none")


@pytest.fixture
def thread():
    runner = WriterThread("test-writer")
    yield runner
    runner.stop()


async def test_calls_run_in_order_on_one_thread_other_than_the_loops(thread):
    ran: list[tuple[int, int]] = []

    def record(n: int) -> int:
        ran.append((n, threading.get_ident()))
        return n * 10

    results = await asyncio.gather(*(thread.run(record, n) for n in range(5)))

    assert results == [0, 10, 20, 30, 40]
    assert [n for n, _ in ran] == [0, 1, 2, 3, 4]
    assert len({ident for _, ident in ran}) == 1
    assert ran[0][1] != threading.get_ident()


async def test_a_calls_error_is_raised_to_its_caller_and_the_next_call_runs(thread):
    def fail() -> None:
        raise LookupError("no such row")

    with pytest.raises(LookupError, match="no such row"):
        await thread.run(fail)
    assert await thread.run(lambda: "still serving") == "still serving"


async def test_the_call_sees_its_callers_context(thread):
    REQUEST.set("req-42")

    assert await thread.run(REQUEST.get) == "req-42"


async def test_a_cancelled_caller_waits_for_its_call_and_gets_its_outcome_first(thread):
    started, release = threading.Event(), threading.Event()
    finished: list[str] = []
    seen: list[str] = []

    def commit() -> str:
        started.set()
        release.wait(5)
        finished.append("committed")
        return "committed"

    async def caller() -> None:
        seen.append(await thread.run(commit))
        await asyncio.sleep(0)  # the cancellation is delivered here
        seen.append("not reached")

    task = asyncio.create_task(caller())
    assert await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # still waiting for the call, which has not ended
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished == ["committed"]
    assert seen == ["committed"]


async def test_an_idle_thread_ends_and_the_next_call_starts_another(thread, monkeypatch):
    monkeypatch.setattr(writer, "IDLE_S", 0.05)
    first = await thread.run(threading.current_thread)
    await asyncio.to_thread(first.join, 5)
    assert not first.is_alive()

    second = await thread.run(threading.current_thread)

    assert second is not first and second.is_alive()


async def test_stop_lets_the_calls_handed_over_finish(thread):
    done: list[int] = []

    def slow(n: int) -> None:
        time.sleep(0.02)
        done.append(n)

    calls = [asyncio.ensure_future(thread.run(slow, n)) for n in range(3)]
    await asyncio.sleep(0)  # handed over
    await asyncio.to_thread(thread.stop)

    assert done == [0, 1, 2]
    await asyncio.gather(*calls)
