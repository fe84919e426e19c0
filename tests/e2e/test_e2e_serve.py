"""`gateway serve` against `gateway simulator`, two real processes (CONTRACT.md 1, 3, 4)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

import httpx
import pytest
from procs import dev_config, free_port, gateway, operator_toml, spawn, wait_http

from gateway.demo.samples import sample_claim

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    cwd: Path
    config: Path
    url: str
    simulator: str


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    sim_port, gw_port = free_port(), free_port()
    simulator = f"http://127.0.0.1:{sim_port}"
    config = tmp_path / "gw.toml"
    config.write_text(dev_config(
        operator_toml("opera", simulator, ["80*", "123456789"], timeout_s=1.0, deadline_s=2.0),
        public_url=f"http://127.0.0.1:{gw_port}",
    ))
    with spawn("simulator", "--port", str(sim_port), "--name", "opera", cwd=tmp_path,
               name="sim") as sim:
        wait_http(f"{simulator}/health", sim, tmp_path, "sim")
        with spawn("serve", "--config", str(config), "--port", str(gw_port), cwd=tmp_path,
                   name="gw") as gw:
            wait_http(f"http://127.0.0.1:{gw_port}/healthz", gw, tmp_path, "gw")
            yield Stack(tmp_path, config, f"http://127.0.0.1:{gw_port}", simulator)


def test_claim_accepted_then_queued_when_operator_down(stack: Stack) -> None:
    done = gateway("keys", "create", "--config", str(stack.config), "--role", "pharmacy",
                   "--finess", "330001231", "--label", "e2e", cwd=stack.cwd)
    assert done.returncode == 0, done.stderr
    auth = {"Authorization": f"Bearer {done.stdout.splitlines()[-1]}"}

    with httpx.Client(base_url=stack.url, headers=auth, timeout=15) as api:
        first = api.post("/v1/claims", json=sample_claim("E2E0001"))
        assert first.status_code == 201, first.text
        claim = first.json()
        assert re.fullmatch(r"clm_[0-9A-Z]{26}", claim["id"]), claim["id"]
        assert (claim["status"], claim["operator"]) == ("accepted", "opera")
        assert (claim["amc_requested_cents"], claim["amc_covered_cents"]) == (280, 280)
        assert claim["rejection"] is None

        detail = api.get(f"/v1/claims/{claim['id']}")
        assert detail.status_code == 200
        assert [step["status"] for step in detail.json()["history"]] == ["pending", "accepted"]

        faults = httpx.post(f"{stack.simulator}/_faults", json={"mode": "down"}, timeout=5)
        assert faults.status_code == 200 and faults.json()["mode"] == "down"

        second = api.post("/v1/claims", json=sample_claim("E2E0002"))
        assert second.status_code == 202, second.text
        queued = second.json()
        assert queued["status"] == "queued" and queued["id"] != claim["id"]
        detail = api.get(f"/v1/claims/{queued['id']}")
        assert detail.json()["invoice_number"] == "E2E0002"
        assert [s for s, _ in groupby(step["status"] for step in detail.json()["history"])] == [
            "pending", "queued"]

        # The operator comes back: the drain sends the queued claim, once.
        httpx.post(f"{stack.simulator}/_faults", json={"mode": "ok"}, timeout=5)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = api.get(f"/v1/claims/{queued['id']}").json()["status"]
            if status != "queued" and status != "pending":
                break
            time.sleep(0.2)
        assert status == "accepted"

    ledger = httpx.get(f"{stack.simulator}/_ledger", timeout=5).json()
    assert ledger["name"] == "opera"
    assert ledger["received"] == 2
    assert ledger["claims"] == [
        {"key": claim["id"], "count": 1, "status": "accepted", "cancelled": False, "lookups": 0},
        {"key": queued["id"], "count": 1, "status": "accepted", "cancelled": False, "lookups": 0},
    ]
