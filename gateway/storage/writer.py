"""The one thread that runs a database's write groups, and hands their outcomes back.

Why not `anyio.to_thread.run_sync`: a call through anyio's worker pool and back cost
115-140 µs of the process's CPU on these cores (a future, a capacity limiter, a cancel
scope, a worker picked from the pool), this one ~60 µs, a bare round trip between two
threads ~23 µs (bench/write_path.py). Every write group pays the handoff: once per
claim queued alone, twice per claim sent. Write groups already run one at a time
(`Database._flush` awaits each before the next), so one long-lived thread fed by a
queue does the same work, on the same pooled connection more often than not.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")
_STOP = None
IDLE_S = 10.0  # a thread with nothing to run this long ends (the next call starts one)


class WriterThread:
    """Runs the calls handed to `run` one after another in a thread of its own, started
    at the first call and ended after IDLE_S without one; `stop` ends it once the calls
    already handed over are done."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # a call is never handed to a thread that is ending

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)` in the thread, in a copy of the caller's context. As with
        anyio's `run_sync`, a caller cancelled meanwhile still waits for the call to end
        (a write group that commits is never reported as failed), and its cancellation
        is delivered at its next await."""
        loop = asyncio.get_running_loop()
        call = _Call(function, args, loop)
        self._hand_over(call)
        cancelled = False
        try:
            while not call.finished:
                try:
                    await call.waiter
                except asyncio.CancelledError:
                    cancelled = True  # wait on: the call runs whatever its caller does
                    call.waiter = loop.create_future()
        finally:
            if cancelled and (task := asyncio.current_task()) is not None:
                task.cancel()
        if call.failed:
            raise call.outcome
        return cast(T, call.outcome)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._calls.put(_STOP)
        if thread is not None:
            thread.join()

    def _hand_over(self, call: _Call) -> None:
        with self._lock:
            self._calls.put(call)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name,
                                                daemon=True)
                self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                call = self._calls.get(timeout=IDLE_S)
            except queue.Empty:
                with self._lock:
                    if self._calls.empty():
                        self._thread = None
                        return
                continue
            if call is _STOP:
                return
            call.run()
            try:
                call.loop.call_soon_threadsafe(call.deliver)
            except RuntimeError:  # its loop is closed: nobody waits for it any more
                pass


class _Call:
    """One call, its outcome, and the future its caller awaits (without `asyncio.shield`,
    whose extra future costs the event loop another turn per call)."""

    __slots__ = ("args", "context", "failed", "finished", "function", "loop", "outcome",
                 "waiter")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.function, self.args, self.loop = function, args, loop
        self.context = contextvars.copy_context()
        self.waiter: asyncio.Future[None] = loop.create_future()
        self.outcome: Any = None
        self.failed = self.finished = False

    def run(self) -> None:
        """In the thread."""
        try:
            self.outcome = self.context.run(self.function, *self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            self.outcome, self.failed = exc, True

    def deliver(self) -> None:
        """On the caller's loop, once `run` is done."""
        self.finished = True
        if not self.waiter.done():
            self.waiter.set_result(None)
