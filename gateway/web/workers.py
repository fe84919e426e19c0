"""`gateway serve --workers N`: N processes on one port, each a gateway instance of its own.

The parent process, uvicorn's supervisor, binds the socket, starts N worker processes
that accept on it, and replaces a worker that dies or stops answering its health check.
Each worker builds its whole gateway from the parent's settings: its own `instance_id`,
database pool, drains, probers, breakers and webhook workers, exactly as a separate
instance of the deployment would. That is why it takes PostgreSQL (the CLI refuses
SQLite): the queue's leases (`FOR UPDATE SKIP LOCKED`), the drain's shared schedule row,
the webhooks' cursor leases and the rate-limit windows already keep instances apart
there. A worker that dies leaves its leases to run out; the drain's sweep then requeues
its claims, to be looked up before any resend (`gateway.queue.abandoned`).

Stopping: SIGTERM or SIGINT to the parent makes it close its own copy of the socket and
send SIGTERM to every worker, then wait for them all. Each worker stops as a lone
`gateway serve` does (`gateway.web.serving`): 503 for `shutdown_delay_s`, requests in
progress finish, its drains give back the claims they leased, and what it was sending
goes back to the queue, looked up first. SIGHUP, SIGTTIN and SIGTTOU (uvicorn's restart
and resizing) are ignored: restart the service instead. A worker whose parent is gone
(killed) stops by itself the same way.

Metrics: the parent gives the workers a fresh directory in `PROMETHEUS_MULTIPROC_DIR`
(removed when it exits), so the counters of every worker (past ones included) add up on
`/metrics` whichever worker answers; the scrape-time gauges (queue, exposure) come from
the database, the breaker states from the answering worker (the same on all with Redis).
"""

from __future__ import annotations

import math
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing import connection
from typing import TYPE_CHECKING

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from gateway.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gateway.web.serving import GracefulServer

log = structlog.get_logger(__name__)
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# a signal to the whole process group reaches each worker directly and, within the
# supervisor's 0.5 s polling, relayed: the same stop, not a second one that cuts it short
REPEATED_SIGNAL_S = 1.0
# uvicorn's health check: a worker that does not answer the parent's ping within this is
# killed and replaced. Its default, 5 s, is too short for a worker's start on a busy
# machine (a fresh interpreter importing the gateway, then building it); the answer
# comes from a thread of its own, so a busy event loop never delays it anyway.
HEALTHCHECK_S = 30


@dataclass(frozen=True)
class Serving:
    """What a serving process needs, pickled to each worker: every worker of a run gets
    the very settings the parent checked, even one started after the file changed."""

    settings: Settings
    host: str
    port: int


def uvicorn_config(app: FastAPI | str, serving: Serving, workers: int | None = None,
                   ) -> uvicorn.Config:
    """The uvicorn options of `gateway serve`, one process or several."""
    from gateway.claims.service import LEASE_GRACE_S

    # X-Forwarded-* are believed only from `trusted_proxies` (TrustedProxyMiddleware)
    # log_config=None: uvicorn keeps the gateway's logging, whose filter masks personal data
    # requests still running when the listener closes get until the longest operator
    # deadline plus the lease grace; then they are cancelled and their claims queued
    longest = max((op.deadline_s for op in serving.settings.operators), default=0.0)
    return uvicorn.Config(
        app, host=serving.host, port=serving.port, log_level="warning", proxy_headers=False,
        log_config=None, timeout_graceful_shutdown=math.ceil(longest + LEASE_GRACE_S),
        workers=workers, timeout_worker_healthcheck=HEALTHCHECK_S)


def graceful_server(application: FastAPI, serving: Serving,
                    repeat_s: float = 0.0) -> GracefulServer:
    from gateway.web.serving import GracefulServer

    return GracefulServer(uvicorn_config(application, serving), application.state.stop_signal,
                          serving.settings.shutdown_delay_s, repeat_s)


class Worker(Process):
    """One worker process: builds its gateway once started, not in the parent."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket],
                 serving: Serving) -> None:
        self.serving = serving  # set first: the child gets this object pickled
        self.parent_pid = os.getpid()
        self.ping_sent_at: float | None = None  # the parent's health check under way
        super().__init__(config, sockets)

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # in the worker
        # the health check answers from the start ("not started" until the server is):
        # building the app takes a while, and a worker silent for
        # `timeout_worker_healthcheck` is killed
        self.parent_conn.close()  # the parent's end: its copy here would hide its death
        threading.Thread(target=self.always_pong, daemon=True).start()
        from gateway.main import create_app, settle_heap

        try:
            application = create_app(self.serving.settings)
        except Exception:  # noqa: BLE001 - checked in the parent; whatever changed since
            log.exception("serve.worker_failed_to_start")
            sys.exit(STARTUP_FAILURE)  # the parent then stops: the next would fail too
        settle_heap()
        server = graceful_server(application, self.serving, REPEATED_SIGNAL_S)
        self._server = server
        server.run(sockets)

    def pong(self) -> None:
        self.child_conn.recv()
        self.child_conn.send(self._server is not None and self._server.started)

    def always_pong(self) -> None:
        try:
            super().always_pong()
        except (EOFError, OSError):
            # the pipe closed: the parent stopping us (its SIGTERM is here or on its way),
            # or the parent gone (killed): then stop as if it had sent SIGTERM
            if os.getppid() != self.parent_pid:
                os.kill(os.getpid(), signal.SIGTERM)


class Supervisor(Multiprocess):
    """uvicorn's supervisor, starting `Worker`s; fails the run when a worker cannot start."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket],
                 serving: Serving) -> None:
        super().__init__(config, sockets)
        self.serving = serving
        self.startup_failed = False

    def _worker(self) -> Worker:
        worker = Worker(self.config, self.sockets, self.serving)
        worker.start()
        return worker

    def run(self) -> None:
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ[METRICS_DIR_ENV] = metrics_dir  # read by the workers' prometheus_client
        try:
            super().run()
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def init_processes(self) -> None:
        self.processes.extend(self._worker() for _ in range(self.processes_num))

    def keep_subprocess_alive(self) -> None:
        """uvicorn's, with gateway workers: replace a dead or hung worker, unless it
        could not start (then every replacement would fail alike: stop). A signal for
        the supervisor is handled first: a SIGTERM to the whole process group also ends
        the workers, which must then not be replaced."""
        from prometheus_client import multiprocess

        for index, process in enumerate(self.processes):
            self.handle_signals()
            if self.should_exit.is_set():
                return
            assert isinstance(process, Worker)  # noqa: S101 - all made by _worker
            if self._responsive(process):
                continue
            process.kill()  # hung: gone for good
            process.join()
            if process.pid is not None:
                multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
            if process.exitcode == STARTUP_FAILURE:
                log.error("serve.worker_failed_to_start", pid=process.pid)
                self.startup_failed = True
                self.should_exit.set()
                return
            self.handle_signals()
            if self.should_exit.is_set():
                return
            log.warning("serve.worker_replaced", pid=process.pid, exitcode=process.exitcode)
            self.processes[index] = self._worker()

    def _responsive(self, worker: Worker) -> bool:
        """uvicorn's health check (a ping the worker answers from a thread of its own),
        over as soon as the worker exits (the pipe alone would not say so: this process
        holds both its ends), and giving way to a signal for the supervisor (a ping
        still unanswered then is waited for at the next check)."""
        if not worker.process.is_alive():
            return False
        try:
            if worker.ping_sent_at is None:
                worker.parent_conn.send(b"ping")
                worker.ping_sent_at = time.monotonic()
            while True:
                ready = connection.wait([worker.parent_conn, worker.process.sentinel],
                                        timeout=0.5)
                if worker.parent_conn in ready:
                    worker.parent_conn.recv()
                    worker.ping_sent_at = None
                    return True
                if ready:  # the sentinel: the worker has exited
                    return False
                if time.monotonic() - worker.ping_sent_at > self.config.timeout_worker_healthcheck:
                    return False
                if self.signal_queue:
                    return True
        except (OSError, EOFError, pickle.UnpicklingError):
            return False

    def terminate_all(self) -> None:
        # once every worker has closed its copy too, the port refuses connections at once
        # instead of queueing them for nobody
        for sock in self.sockets:
            sock.close()
        super().terminate_all()

    def _ignored(self, name: str) -> None:
        log.warning("serve.signal_ignored", signal=name,
                    reason="the number of workers is fixed: restart the service")

    def handle_hup(self) -> None:
        self._ignored("SIGHUP")

    def handle_ttin(self) -> None:
        self._ignored("SIGTTIN")

    def handle_ttou(self) -> None:
        self._ignored("SIGTTOU")


def run_workers(serving: Serving, workers: int) -> bool:
    """Serve on `workers` processes until stopped; False if a worker could not start."""
    # the app is built in each worker; the parent's config only binds and supervises
    config = uvicorn_config("gateway.main:create_app", serving, workers=workers)
    supervisor = Supervisor(config, [config.bind_socket()], serving)
    supervisor.run()
    return not supervisor.startup_failed
