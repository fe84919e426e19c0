"""`gateway demo`: the banner's curl works as printed (CONTRACT.md section 1)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from procs import free_port_triple, output, spawn

pytestmark = pytest.mark.slow

CURL = re.compile(r"^curl -s -X POST \S+/v1/claims \\\n.*\\\n\s+-d '[^'\n]*'$", re.MULTILINE)


def wait_for_curl(cwd: Path, proc: subprocess.Popen[bytes], timeout: float = 20) -> str:
    """The banner's claim-submitting curl command, once fully printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if match := CURL.search((cwd / "demo.out").read_text()):
            return match.group(0)
        if proc.poll() is not None:
            raise AssertionError(f"demo exited {proc.returncode}:\n{output(cwd, 'demo')}")
        time.sleep(0.1)
    raise AssertionError(f"no curl in the banner after {timeout}s:\n{output(cwd, 'demo')}")


def test_demo_banner_curl_submits_a_claim(tmp_path: Path) -> None:
    port = free_port_triple()
    with spawn("demo", "--port", str(port), cwd=tmp_path, name="demo") as proc:
        command = wait_for_curl(tmp_path, proc)
        argv = shlex.split(command.replace("\\\n", " "))
        assert argv[:5] == ["curl", "-s", "-X", "POST", f"http://127.0.0.1:{port}/v1/claims"]
        headers = dict(h.split(": ", 1) for h in argv[6:10:2])
        assert argv[5] == argv[7] == "-H" and argv[9] == "-d" and len(argv) == 11
        assert headers["Content-Type"] == "application/json"
        assert re.fullmatch(r"Bearer key_[0-9a-f]{16}\.\S+", headers["Authorization"])
        key = headers["Authorization"].removeprefix("Bearer ")
        assert f"pharmacy key:    {key}   (FINESS 330001231)" in (tmp_path / "demo.out").read_text()
        body = argv[10]
        assert json.loads(body)["dispenser"] == {"finess": "330001231"}

        post = {"url": argv[4], "content": body, "headers": headers, "timeout": 15}
        first = httpx.post(**post)
        assert first.status_code == 201, first.text
        assert first.json()["status"] == "accepted"
        assert first.json()["amc_covered_cents"] == 280
        assert "Idempotent-Replayed" not in first.headers

        again = httpx.post(**post)
        assert again.status_code == 201, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["status"] == "accepted"

        pasted = subprocess.run(  # noqa: S603 - the demo's own printed command
            ["bash", "-c", command], capture_output=True, text=True, timeout=20, check=False,  # noqa: S607
        )
        assert pasted.returncode == 0, pasted.stderr
        answer = json.loads(pasted.stdout)
        assert (answer["id"], answer["status"]) == (first.json()["id"], "accepted")

        assert (tmp_path / "var" / "gateway.db").is_file()
        assert proc.poll() is None


def test_demo_operator_goes_down_and_comes_back(tmp_path: Path) -> None:
    port = free_port_triple()
    with spawn("demo", "--port", str(port), cwd=tmp_path, name="demo") as proc:
        command = wait_for_curl(tmp_path, proc)
        banner = (tmp_path / "demo.out").read_text()
        faults = re.search(r"curl -s -X POST (http://127\.0\.0\.1:\d+/_faults)", banner)
        assert faults is not None, banner
        argv = shlex.split(command.replace("\\\n", " "))
        headers = dict(h.split(": ", 1) for h in argv[6:10:2])
        body = json.loads(argv[10])
        body["invoice_number"] = "DOWN1"
        assert httpx.post(faults.group(1), json={"mode": "down"}, timeout=5).status_code == 200
        queued = httpx.post(argv[4], json=body, headers=headers, timeout=15)
        assert queued.status_code == 202 and queued.json()["status"] == "queued"
        httpx.post(faults.group(1), json={"mode": "ok"}, timeout=5)
        claim_url = f"http://127.0.0.1:{port}/v1/claims/{queued.json()['id']}"
        deadline = time.monotonic() + 30
        status = "queued"
        while time.monotonic() < deadline and status != "accepted":
            time.sleep(0.3)
            status = httpx.get(claim_url, headers=headers, timeout=5).json()["status"]
        assert status == "accepted"
        assert proc.poll() is None
