"""Stopping without losing a claim: what SIGTERM does to a serving gateway (rolling restarts).

The first SIGTERM (or Ctrl-C) marks the app as stopping. For `shutdown_delay_s` the
listener stays open while new requests get 503 `shutting-down` with `Retry-After` and
`Connection: close`, and /readyz 503, so a load balancer takes the instance out before it
goes. Then uvicorn's own graceful shutdown: the listener closes, requests in progress
finish (a synchronous claim is answered within its deadline, or queued), and the lifespan
stops the workers and puts back in the queue whatever this process still holds. A second
signal skips what is left of the pause. Under `gateway serve --workers N` each worker
process stops so, told by the supervisor (`gateway.web.workers`); a signal to the whole
process group reaches a worker twice (directly, then relayed), so there a second signal
within `repeat_s` of the first counts as the same one.
"""

from __future__ import annotations

import threading
import time
from types import FrameType

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError, problem_response

ALWAYS_ANSWERED = frozenset({"/healthz"})  # the process is up, even while it stops


class ShuttingDown(GatewayError):
    status, type, title = 503, "shutting-down", "This gateway instance is stopping"


class StopSignal:
    """Set once the instance is stopping; read by the middleware and /readyz."""

    def __init__(self) -> None:
        self.since: float | None = None

    @property
    def is_set(self) -> bool:
        return self.since is not None

    def set(self) -> None:
        if self.since is None:
            self.since = time.monotonic()


class StoppingMiddleware:
    """While stopping, refuse new requests with 503 so their clients retry elsewhere."""

    def __init__(self, app: ASGIApp, signal: StopSignal) -> None:
        self.app = app
        self.signal = signal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.signal.is_set
                or scope["path"] in ALWAYS_ANSWERED):
            await self.app(scope, receive, send)
            return
        refusal = problem_response(ShuttingDown(
            "this instance is stopping; send the request again (to another instance)",
            headers={"Retry-After": "1", "Connection": "close"}))
        await refusal(scope, receive, send)


class GracefulServer(uvicorn.Server):
    """uvicorn, with a pause between the stop signal and closing the listener."""

    def __init__(self, config: uvicorn.Config, signal: StopSignal, delay_s: float,
                 repeat_s: float = 0.0) -> None:
        super().__init__(config)
        self.stop_signal = signal
        self.delay_s = delay_s
        self.repeat_s = repeat_s  # a signal this soon after the first is the first again
        self._timer: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.stop_signal.is_set
        since = self.stop_signal.since
        if not first and since is not None and time.monotonic() - since < self.repeat_s:
            return
        self.stop_signal.set()
        if first and self.delay_s > 0:
            self._timer = threading.Timer(self.delay_s, super().handle_exit, (sig, frame))
            self._timer.daemon = True
            self._timer.start()
            return
        if self._timer is not None:
            self._timer.cancel()
        super().handle_exit(sig, frame)
