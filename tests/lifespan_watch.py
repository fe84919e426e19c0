"""asgi-lifespan, telling why: a gateway's lifespan that does not stop within asgi-lifespan's
5 s fails its test with where every thread and every task of the event loop stood then,
instead of a bare TimeoutError.

Why: such a failure came about once in a few runs of the whole suite, in the teardown
of tests whose assertions had all passed, and the bare timeout said nothing of what the
stop waited on. With these stacks the next run that met it named the cause, a thread
joined while it waited for a signal it had lost (`gateway.storage.checkpoints`).
"""

from __future__ import annotations

import asyncio
import faulthandler
import tempfile
from typing import Any

from asgi_lifespan import LifespanManager

_lifespan_shutdown = LifespanManager.shutdown


class LifespanDidNotStop(AssertionError):
    """The gateway's lifespan was still stopping when asgi-lifespan's timeout ran out."""


async def _explained_shutdown(self: LifespanManager) -> None:
    try:
        await _lifespan_shutdown(self)
    except TimeoutError as timeout:  # the stop is still under way: say where it stands
        raise LifespanDidNotStop(
            f"a gateway's lifespan did not stop within {self.shutdown_timeout} s.\n"
            f"Its threads:\n{_threads()}\nIts event loop's tasks:\n{_tasks()}") from timeout


def _threads() -> str:
    with tempfile.TemporaryFile("w+") as dump:
        faulthandler.dump_traceback(file=dump)
        dump.seek(0)
        return dump.read()


def _tasks() -> str:
    return "".join(f"{task.get_name()}:\n{_awaiting(task)}" for task in asyncio.all_tasks())


def _awaiting(task: asyncio.Task[Any]) -> str:
    """Every coroutine `task` awaits through, down to what it waits on: asyncio's own
    `print_stack` shows a suspended task's outermost frame only."""
    lines, awaited = [], task.get_coro()
    while awaited is not None:
        frame = next((f for name in ("cr_frame", "gi_frame", "ag_frame")
                      if (f := getattr(awaited, name, None)) is not None), None)
        if frame is None:  # a future, or a coroutine already finished
            lines.append(f"  waits on {awaited!r}")
            break
        lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        if frame.f_code.co_name in ("__aenter__", "__aexit__") and hasattr(
                frame.f_locals.get("self"), "gen"):  # an asynccontextmanager's generator
            awaited = frame.f_locals["self"].gen
            continue
        awaited = next((a for name in ("cr_await", "gi_yieldfrom", "ag_await")
                        if (a := getattr(awaited, name, None)) is not None), None)
    return "\n".join(lines) + "\n"


def install() -> None:
    LifespanManager.shutdown = _explained_shutdown  # type: ignore[method-assign]
