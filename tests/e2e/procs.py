"""Small helpers to run the real `gateway` command as bounded subprocesses."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

GATEWAY = str(Path(sys.executable).with_name("gateway"))
RUN_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port_triple() -> int:
    """A port P with P+1 to P+3 free too, for `gateway demo --port P` (its operators'
    simulators listen on P+1 and P+2, its Pro Santé Connect simulator on P+3). Chosen
    below Linux's ephemeral range (32768-60999), where the kernel would otherwise hand
    one of them to some outgoing connection meanwhile ("Address already in use")."""
    for _ in range(200):
        port = random.randrange(20_000, 32_000)  # noqa: S311 - not a secret
        if all(_bindable(port + i) for i in range(4)):
            return port
    raise AssertionError("no four consecutive free ports")


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without any GATEWAY_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


def gateway(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run `gateway ARGS` to completion (killed after `timeout`)."""
    return subprocess.run(  # noqa: S603 - our own entry point, fixed arguments
        [GATEWAY, *args], cwd=cwd, env=env if env is not None else clean_env(),
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the process group, then kill it if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
    # children left in the group after the leader exited
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def spawn(*args: str, cwd: Path, name: str,
          env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start `gateway ARGS` in its own session; stdout/stderr go to files under cwd."""
    out = (cwd / f"{name}.out").open("wb")
    err = (cwd / f"{name}.err").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - our own entry point, fixed arguments
        [GATEWAY, *args], cwd=cwd, env=env if env is not None else clean_env(),
        stdout=out, stderr=err, start_new_session=True,
    )
    try:
        yield proc
    finally:
        stop(proc)
        out.close()
        err.close()


def output(cwd: Path, name: str) -> str:
    return (cwd / f"{name}.out").read_text(errors="replace") + (
        cwd / f"{name}.err"
    ).read_text(errors="replace")


def wait_http(url: str, proc: subprocess.Popen[bytes], cwd: Path, name: str,
              timeout: float = 20) -> None:
    """Poll `url` until it answers 200; fail early if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited {proc.returncode}:\n{output(cwd, name)}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not up after {timeout}s:\n{output(cwd, name)}")


def operator_toml(name: str, base_url: str, insurers: list[str], **extra: object) -> str:
    lines = [
        "[[operators]]", f'name = "{name}"', 'adapter = "reference"', f'base_url = "{base_url}"',
        "insurers = [" + ", ".join(f'"{p}"' for p in insurers) + "]",
        *(f"{key} = {value!r}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def dev_config(operators: str = "", **top: str) -> str:
    """A development config on SQLite under ./var, with `top` overriding top-level keys."""
    values = {"environment": "development", "database_url": "sqlite:///var/gateway.db",
              "data_dir": "var", **top}
    head = "".join(f'{key} = "{value}"\n' for key, value in values.items())
    return head + "\n" + (operators or operator_toml("opera", "http://127.0.0.1:9", ["80*"]))


def write_config(cwd: Path, text: str = "", name: str = "gw.toml") -> Path:
    """A config file in cwd: `text`, or a valid development one."""
    path = cwd / name
    path.write_text(text or dev_config())
    return path
