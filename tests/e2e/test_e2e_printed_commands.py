"""Every curl the demo prints, and every curl the README shows against the demo, works.

The demo's banner is run as printed. The README's commands use the default ports
(8000 for the gateway, 8001 and 8002 for the simulators) and placeholders for keys and
for the rest of a claim's body (`…`): those are filled in from the banner. Each command
runs with the real `curl` and must answer 2xx (and the status a `# -> NNN` comment
after it promises); a fault switch must also have switched the simulator's mode.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from procs import free_port_triple, output, spawn, wait_http

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/operations.md", "docs/adapters.md")
DOC_PORT = 8000  # `gateway demo`'s default port, which the documents show
DEMO_PORTS = range(DOC_PORT, DOC_PORT + 4)
KEY_PLACEHOLDER = re.compile(r"key_[^\s']*…[^\s']*")
CURL_TIMEOUT_S = 40  # the banner's long-poll waits up to 25 s when there is no event
BANNER_END = re.compile(r"curl -s '\S+/v1/events\?wait=\d+' \\\n\s+-H 'Authorization: "
                        r"Bearer \S+'\n")


@dataclass
class Command:
    source: str
    argv: list[str]
    expected_status: int | None = None

    @property
    def url(self) -> str:
        return next(arg for arg in self.argv if arg.startswith("http"))

    @property
    def body(self) -> str | None:
        for flag, value in zip(self.argv, self.argv[1:], strict=False):
            if flag in ("-d", "--data", "--data-raw"):
                return value
        return None


def logical_lines(text: str) -> list[str]:
    """Shell lines with their backslash continuations joined."""
    return text.replace("\\\n", " ").splitlines()


def commands_in(text: str, source: str) -> list[Command]:
    """`curl ...` lines (a `# -> NNN` line after one states its status)."""
    found: list[Command] = []
    for line in logical_lines(text):
        stripped = line.strip()
        if stripped.startswith("curl "):
            found.append(Command(source, shlex.split(stripped)))
        elif (promise := re.match(r"#\s*->\s*(\d{3})\b", stripped)) and found:
            found[-1].expected_status = int(promise.group(1))
    return found


def banner_commands(banner: str) -> list[Command]:
    return commands_in(re.sub(r"^.*?(?=curl )", "", banner, flags=re.MULTILINE), "banner")


def document_commands(path: Path) -> list[Command]:
    """Curls in fenced code blocks and in inline code spans of one document."""
    text = path.read_text(encoding="utf-8")
    commands: list[Command] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        commands += commands_in(block, path.name)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    for span in re.findall(r"`(curl [^`]+)`", prose):
        commands += commands_in(" ".join(span.split()), path.name)
    return [c for c in commands if targets_the_demo(c.url)]


def targets_the_demo(url: str) -> bool:
    parts = urlsplit(url)
    return parts.hostname == "127.0.0.1" and parts.port in DEMO_PORTS


@dataclass(frozen=True)
class Demo:
    port: int
    pharmacy_key: str
    operations_key: str
    claim_body: dict[str, object]

    def fill_in(self, command: Command) -> Command:
        """A document's command with the demo's real ports, keys and claim body."""
        argv = [self._fill_arg(arg, command) for arg in command.argv]
        return Command(command.source, argv, command.expected_status)

    def _fill_arg(self, arg: str, command: Command) -> str:
        if arg == command.body and "…" in arg:
            shown = json.loads(re.sub(r",?\s*…", "", arg))  # the fields the document shows
            return json.dumps({**self.claim_body, **shown})
        for offset in range(len(DEMO_PORTS)):
            arg = arg.replace(f"127.0.0.1:{DOC_PORT + offset}", f"127.0.0.1:{self.port + offset}")
        key = (self.operations_key if urlsplit(command.url).path.startswith("/v1/operators")
               else self.pharmacy_key)
        return KEY_PLACEHOLDER.sub(key, arg)


def wait_for_banner(cwd: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (cwd / "demo.out").read_text(errors="replace")
        if BANNER_END.search(text):
            return text
        if proc.poll() is not None:
            raise AssertionError(f"demo exited {proc.returncode}:\n{output(cwd, 'demo')}")
        time.sleep(0.1)
    raise AssertionError(f"no complete banner after {timeout}s:\n{output(cwd, 'demo')}")


def demo_of(banner: str, port: int) -> Demo:
    pharmacy = re.search(r"pharmacy key:\s+(\S+)", banner)
    operations = re.search(r"operations key:\s+(\S+)", banner)
    assert pharmacy and operations, banner
    claim = next(c for c in banner_commands(banner) if c.url.endswith("/v1/claims"))
    assert claim.body is not None
    return Demo(port, pharmacy.group(1), operations.group(1), json.loads(claim.body))


def run_curl(command: Command, tmp_path: Path) -> tuple[int, str]:
    """Run the command with curl as given, plus where to put the body and the status."""
    answer = tmp_path / "answer"
    completed = subprocess.run(  # noqa: S603 - the documents' own commands, parsed by shlex
        [*command.argv, "-o", str(answer), "-w", "%{http_code}",
         "--max-time", str(CURL_TIMEOUT_S)],
        capture_output=True, text=True, timeout=CURL_TIMEOUT_S + 10, check=False,
    )
    assert completed.returncode == 0, (command, completed.stderr)
    return int(completed.stdout.strip()), answer.read_text(errors="replace")


def is_fault_switch(command: Command) -> bool:
    return urlsplit(command.url).path == "/_faults"


def check(command: Command, tmp_path: Path) -> None:
    status, body = run_curl(command, tmp_path)
    assert 200 <= status < 300, f"{command.source}: {shlex.join(command.argv)}\n-> {status} {body}"
    if command.expected_status is not None:
        assert status == command.expected_status, (command.source, status, body)
    if is_fault_switch(command):
        asked = json.loads(command.body or "{}")["mode"]
        mode = httpx.get(command.url, timeout=5).json()["mode"]
        assert mode == asked, (command.source, mode)


def test_every_printed_curl_works_against_the_demo(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    port = free_port_triple()
    with spawn("demo", "--port", str(port), cwd=tmp_path, name="demo") as proc:
        banner = wait_for_banner(tmp_path, proc)
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, tmp_path, "demo")
        demo = demo_of(banner, port)
        printed = banner_commands(banner)
        documented = [demo.fill_in(c) for doc in DOCUMENTS if (ROOT / doc).exists()
                      for c in document_commands(ROOT / doc)]

        paths = sorted(urlsplit(c.url).path for c in printed)
        assert paths == ["/_faults", "/_faults", "/v1/claims", "/v1/events", "/v1/operators"]
        readme = [urlsplit(c.url).path for c in documented if c.source == "README.md"]
        assert "/v1/claims" in readme and "/_faults" in readme, readme

        # Faults last, so that no probe can open a breaker under a claim the README
        # promises an immediate 201 for.
        everything = printed + documented
        for command in sorted(everything, key=is_fault_switch):
            check(command, tmp_path)
        assert proc.poll() is None
