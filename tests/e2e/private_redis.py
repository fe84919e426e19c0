"""A `redis-server` of the test's own on a free 127.0.0.1 port, that the test can stop and
start again on the same port (an outage on demand); never the machine's Redis on 6379.

Nothing is persisted (`--save "" --appendonly no`): a restarted server is empty, as after
a crash. The server is always stopped when the context ends, even on failure; a test
using it is skipped when `redis-server` is not installed.
"""

from __future__ import annotations

import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


class PrivateRedis:
    """One redis-server process at a time, always on `port`."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers PING."""
        assert not self.running, "already running"
        self.starts += 1
        log = (self.workdir / f"redis-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(  # noqa: S603 - a fixed command line
            [_server(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self._wait_ready()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL); its port refuses connections after."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)

    def ping(self) -> bool:
        """True when the server answers PING on its port (a raw RESP exchange)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited {self.proc.returncode}: "
                                     f"{self._log_tail()}")
            if self.ping():
                return
            time.sleep(0.05)
        raise AssertionError(f"redis-server not ready on {self.port}: {self._log_tail()}")

    def _log_tail(self) -> str:
        path = self.workdir / f"redis-{self.starts}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def _quiet_port() -> int:
    """A free port below Linux's ephemeral range (32768-60999): while the server is
    stopped, no outgoing connection can be handed its port meanwhile."""
    for _ in range(200):
        port = random.randrange(20_000, 32_000)  # noqa: S311 - not a secret
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port for redis-server")


def _server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("needs redis-server")
    return path


@contextmanager
def private_redis(workdir: Path) -> Iterator[PrivateRedis]:
    """A started private Redis, stopped at the end whatever happens."""
    _server()  # skip before creating anything
    workdir.mkdir(parents=True, exist_ok=True)
    redis = PrivateRedis(workdir, _quiet_port())
    try:
        redis.start()
        yield redis
    finally:
        redis.stop()
