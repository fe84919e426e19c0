"""The SQLite file's filesystem full, or read-only under the running gateway: `gateway serve`
answers 503 `database-unavailable` (never 500), `/readyz` 503; the fault lifted, it
recovers by itself (CONTRACT.md 3.1: a claim is stored whole or not at all).

- full: the database file (and its -wal, -shm) lives on a small tmpfs this test mounts
  (root only; the data dir with the keys stays outside it); while the gateway runs, its
  WAL is checkpointed and truncated, then a ballast file fills the tmpfs; then removed.
- read-only: Linux refuses `mount -o remount,ro` while a process holds a file there open
  for writing, as SQLite always does ("mount point is busy"), and a gateway started on a
  read-only file exits at once (its migration check cannot open the database). So
  strace injects EROFS into the running gateway's file writes (pwrite64), what a
  filesystem turned read-only under open files answers; detaching lifts it.
In both: claims and /readyz get 503 as long as the fault lasts, then every claim answered
2xx before it is still there, the refused one, retried with its key, is answered and
sent once, and the process output has no traceback and tells the outage once: one
`database.unavailable`, then one `database.recovered`.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from procs import free_port, output, wait_http
from test_e2e_resilience import (
    assert_each_sent_once,
    claim_of,
    gateway_proc,
    ledger,
    pharmacy_auth,
    simulator_proc,
    wait_for,
    write_gateway_config,
)

from gateway.demo.samples import sample_claim

pytestmark = pytest.mark.slow
DATABASE = "gateway.db"
TMPFS_SIZE = "4m"  # the migrated file is ~300 KB; room for a WAL and a few hundred claims
BEFORE = 5  # claims answered before the fault
MAX_TRIES = 300  # claims submitted, at most, until one meets the fault
HOLD_S = 3  # the fault lasts at least this long: the drain's idle rounds come every ~0.5 s
RECOVERY_S = 20  # bound: /readyz 200 again after the fault is lifted
REPLAY_S = 15  # bound: a request cut mid-way gets its lease's end (deadline_s + 5 s), then 202


# --- the filesystem -------------------------------------------------------------------------

def mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True,  # noqa: S603, S607
                          timeout=10, check=False)


@contextmanager
def small_tmpfs(path: Path) -> Iterator[Path]:
    """A tmpfs of TMPFS_SIZE at `path`, unmounted on the way out (stop its users first)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    mounted = mount("-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        unmount(path)


def unmount(path: Path) -> None:
    for args in (["umount", str(path)], ["umount", "--lazy", str(path)]):
        if subprocess.run(args, capture_output=True, timeout=10,  # noqa: S603, S607
                          check=False).returncode == 0:
            return
    raise AssertionError(f"{path} could not be unmounted")


def truncate_wal(database: Path) -> None:
    """Checkpoint the WAL and cut it to nothing, as `sqlite3 FILE 'PRAGMA
    wal_checkpoint(TRUNCATE)'` would: else a small write fits in room the WAL file
    already has (a readiness probe, while claims fail), and the outage comes and goes."""
    connection = sqlite3.connect(database, timeout=5, isolation_level=None)
    try:
        for _ in range(50):
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                return
            time.sleep(0.1)
        raise AssertionError("the gateway's WAL could not be checkpointed")
    finally:
        connection.close()


@contextmanager
def full(disk: Path) -> Iterator[None]:
    """A ballast file written until the tmpfs has no page left (ENOSPC); removed after."""
    truncate_wal(disk / DATABASE)
    ballast = disk / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 4096):
            while True:
                try:
                    os.write(fd, chunk)  # a short write: the next one meets ENOSPC
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC, exc
                    break
    finally:
        os.close(fd)
    try:
        yield
    finally:
        ballast.unlink()


def traced_by(pid: int, tracer: int) -> bool:
    """Every thread of `pid` is traced by `tracer`."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return bool(tasks) and all(
            f"TracerPid:\t{tracer}\n" in (task / "status").read_text() for task in tasks)
    except FileNotFoundError:  # a thread that just ended: look again
        return False


@contextmanager
def read_only_writes(pid: int, cwd: Path) -> Iterator[None]:
    """Every file write (pwrite64) of process `pid` fails with EROFS, as on a filesystem
    turned read-only under its open files; back to normal on the way out."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    log = (cwd / "strace.err").open("wb")
    tracer = subprocess.Popen(  # noqa: S603 - fixed arguments
        [strace, "-f", "-qq", "-o", "/dev/null", "-e", "trace=pwrite64",
         "-e", "inject=pwrite64:error=EROFS", "-p", str(pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while not traced_by(pid, tracer.pid):
            if tracer.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"cannot trace the gateway: {(cwd / 'strace.err').read_text()}")
            time.sleep(0.05)
        yield
    finally:
        tracer.send_signal(signal.SIGINT)  # detaches from every thread
        try:
            tracer.wait(timeout=10)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait(timeout=5)
        log.close()


# --- the gateway ----------------------------------------------------------------------------

def post_claim(url: str, auth: dict[str, str], invoice: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/claims", json=sample_claim(invoice), timeout=10,
                      headers={**auth, "Idempotency-Key": f"key-{invoice}"})


def submit_before(url: str, auth: dict[str, str]) -> dict[str, str]:
    """BEFORE claims answered 2xx: claim id -> status."""
    answered = {}
    for n in range(BEFORE):
        response = post_claim(url, auth, f"OK{n}")
        assert response.status_code in (201, 202), response.text
        answered[response.json()["id"]] = response.json()["status"]
    return answered


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith("database-unavailable"), response.json()
    assert int(response.headers["Retry-After"]) > 0


def first_refused(url: str, auth: dict[str, str], answered: dict[str, str]) -> str:
    """Submit claims until one meets the fault (SQLite's WAL may absorb a few writes):
    each before it 2xx (added to `answered`), it a 503. Its invoice number."""
    for n in range(MAX_TRIES):
        invoice = f"DOWN{n}"
        response = post_claim(url, auth, invoice)
        if response.status_code not in (201, 202):
            assert_database_unavailable(response)
            return invoice
        answered[response.json()["id"]] = response.json()["status"]
    raise AssertionError(f"{MAX_TRIES} claims stored despite the fault")


def readyz(url: str) -> int:
    return httpx.get(f"{url}/readyz", timeout=5).status_code


def assert_recovers(url: str, auth: dict[str, str], refused: str) -> dict[str, Any]:
    """Without anyone's help /readyz is 200 again; then the refused request, same key,
    is answered 201, or 202 when its first try was cut after reaching the operator."""
    wait_for("/readyz 200 after the fault", lambda: readyz(url) == 200, RECOVERY_S, 0.2)

    def answered() -> httpx.Response | None:
        response = post_claim(url, auth, refused)
        if response.status_code == 409 and response.json()["type"].endswith("in-flight"):
            return None  # its first try reached the operator: wait for its lease to end
        return response

    response = wait_for("the refused claim answered", answered, REPLAY_S, 0.5)
    assert response.status_code in (201, 202), response.text
    return response.json()  # type: ignore[no-any-return]


def assert_still_there(url: str, auth: dict[str, str], answered: dict[str, str]) -> None:
    """Each claim answered 2xx is there, as answered (a 202's may have moved on since)."""
    for claim_id, status in answered.items():
        now = claim_of(url, auth, claim_id)["status"]
        assert now == status or status in ("queued", "pending"), (claim_id, status, now)


def outage_events(cwd: Path) -> list[str]:
    """The gateway's database.unavailable / database.recovered log events, in order."""
    return [event for line in output(cwd, "gw").splitlines()
            for event in ("database.unavailable", "database.recovered")
            if f'"event": "{event}"' in line]


def assert_refused_throughout(url: str, auth: dict[str, str], refused: str) -> None:
    """For HOLD_S, the refused request again and /readyz: 503 each time (the gateway's
    background work, idle or not, does not make it look ready)."""
    until = time.monotonic() + HOLD_S
    while time.monotonic() < until:
        assert_database_unavailable(post_claim(url, auth, refused))
        assert readyz(url) == 503
        time.sleep(0.2)


@contextmanager
def stack_on(disk: Path, cwd: Path) -> Iterator[tuple[Path, str, str, dict[str, str]]]:
    """A simulator, and a config whose database is on `disk`: (config, url, sim, auth)."""
    sim_port, gw_port = free_port(), free_port()
    simulator = f"http://127.0.0.1:{sim_port}"
    config = write_gateway_config(cwd, simulator, port=gw_port,
                                  database_url=f"sqlite:///{disk / DATABASE}")
    auth = pharmacy_auth(config)
    with simulator_proc(cwd, sim_port) as sim:
        wait_http(f"{simulator}/health", sim, cwd, "sim")
        yield config, f"http://127.0.0.1:{gw_port}", simulator, auth


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# --- the tests ------------------------------------------------------------------------------

def outage_then_recovery(cwd: Path, database_dir: Path,
                         fault: Callable[[int], AbstractContextManager[None]]) -> None:
    """Claims before, during and after `fault(the gateway's pid)`; see the module doc."""
    with stack_on(database_dir, cwd) as (config, url, simulator, auth), \
            gateway_proc(cwd, config, port_of(url)) as gateway:
        answered = submit_before(url, auth)
        with fault(gateway.pid):
            refused = first_refused(url, auth, answered)
            assert_refused_throughout(url, auth, refused)
            assert outage_events(cwd) == ["database.unavailable"]
        lifted = time.monotonic()
        claim = assert_recovers(url, auth, refused)
        print(f"refused at {refused}; {claim['status']} "
              f"{time.monotonic() - lifted:.1f} s after the fault was lifted")
        assert_still_there(url, auth, answered)
        assert_each_sent_once(ledger(simulator)["claims"], [*answered, claim["id"]],
                              ambiguous=True)
    assert outage_events(cwd) == ["database.unavailable", "database.recovered"]
    assert "Traceback" not in output(cwd, "gw"), output(cwd, "gw")[-4000:]


def test_a_full_filesystem_is_503_then_the_gateway_recovers_by_itself(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        outage_then_recovery(tmp_path, disk, lambda _: full(disk))


def test_writes_failing_read_only_are_503_then_the_gateway_recovers_by_itself(
    tmp_path: Path,
) -> None:
    outage_then_recovery(tmp_path, tmp_path, lambda pid: read_only_writes(pid, tmp_path))
