"""A throwaway PostgreSQL cluster that a test may stop and start at will.

The shared server (port 5432) is other people's: a test that restarts PostgreSQL needs a
cluster of its own. This one lives in a fresh temporary directory, listens on a free port
of 127.0.0.1 with trust authentication, and is stopped and removed at the end whatever
happens. PostgreSQL refuses to run as root: as root, its commands run as the `postgres`
OS user, in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from procs import free_port_triple

PG_TIMEOUT_S = 30  # every pg_ctl wait, and the bound of each command around it
DATABASE = "gateway"


def _binaries() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, if any."""
    found = [Path(path).parent for path in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    return max(found, key=lambda bin_dir: int(bin_dir.parent.name)
               if bin_dir.parent.name.isdigit() else 0, default=None)


def _run_as() -> pwd.struct_passwd | None:
    """The `postgres` OS user when we are root (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no `postgres` OS user to run PostgreSQL")


class PrivatePostgres:
    """One cluster: its data directory, port and commands."""

    def __init__(self, bin_dir: Path, base: Path, owner: pwd.struct_passwd | None) -> None:
        self.bin_dir, self.base, self.owner = bin_dir, base, owner
        self.data = base / "data"
        # Below the ephemeral range: while the server is down, no outgoing connection
        # can be handed its port (free_port_triple), so it can always start again.
        self.port = free_port_triple()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def _pg(self, tool: str, *args: str) -> None:
        """Run a PostgreSQL command (as its owner), its output appended to pg_ctl.out."""
        with (self.base / "pg_ctl.out").open("ab") as out:
            user = {"user": self.owner.pw_uid, "group": self.owner.pw_gid,
                    "extra_groups": []} if self.owner else {}
            done = subprocess.run(  # noqa: S603 - fixed PostgreSQL binaries
                [str(self.bin_dir / tool), *args], cwd=self.base, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, timeout=PG_TIMEOUT_S + 10,
                check=False, **user,  # type: ignore[arg-type]
            )
        if done.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} exited {done.returncode}:\n"
                                 f"{self.log()}")

    def log(self) -> str:
        parts = [self.base / "pg_ctl.out", self.base / "postgres.log"]
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in parts if p.exists())

    def initdb(self) -> None:
        self._pg("initdb", "-D", str(self.data), "--auth=trust", "--username=postgres",
                 "--encoding=UTF8", "--no-locale", "--no-sync")

    def start(self) -> None:
        """Start and wait until it accepts connections."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base} "
                   "-c fsync=off -c max_connections=100")
        self._pg("pg_ctl", "start", "-D", str(self.data), "-l", str(self.base / "postgres.log"),
                 "-w", "-t", str(PG_TIMEOUT_S), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        """Stop (fast: open sessions are cut off) and wait until it is down."""
        self._pg("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w",
                 "-t", str(PG_TIMEOUT_S))

    def restart(self) -> None:
        self._pg("pg_ctl", "restart", "-D", str(self.data), "-m", "fast", "-w",
                 "-t", str(PG_TIMEOUT_S), "-l", str(self.base / "postgres.log"))

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self) -> None:
        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'CREATE DATABASE "{DATABASE}"')

    def destroy(self) -> None:
        """Stop it however it is, then remove its files; never raises over a test's error."""
        try:
            if self.running():
                self._stop_or_kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def _stop_or_kill(self) -> None:
        for mode in ("fast", "immediate"):
            try:
                self.stop(mode)
                return
            except (AssertionError, subprocess.TimeoutExpired):
                continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)


@contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started cluster with an empty database `gateway`; stopped and removed at the end."""
    bin_dir = _binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)")
    owner = _run_as()
    # Under /tmp (world-traversable), not pytest's 0700 tmp_path, and owned by the user
    # the server runs as; the short path also keeps the socket path under its limit.
    base = Path(tempfile.mkdtemp(prefix="gw-pg-", dir="/tmp" if owner else None))  # noqa: S108
    if owner:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    cluster = PrivatePostgres(bin_dir, base, owner)
    try:
        cluster.initdb()
        cluster.start()
        cluster.create_database()
        yield cluster
    finally:
        cluster.destroy()
