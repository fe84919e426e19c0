"""Two `gateway serve` processes on one PostgreSQL database drain one queue together:
no claim sent twice blindly, and `drain_per_s` holds for both together (CONTRACT.md 2, 4).

Needs GATEWAY_TEST_POSTGRES_URL; the test creates its own database on that server and
drops it afterwards, never touching the tables of the database the URL names.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from procs import free_port, wait_http
from sqlalchemy.engine import make_url
from test_e2e_resilience import (
    assert_each_sent_once,
    assert_within_deadline,
    board,
    gateway_proc,
    invoices,
    ledger,
    pharmacy_auth,
    set_fault,
    simulator_proc,
    submit_all,
    wait_all_accepted,
    wait_for,
    write_gateway_config,
)

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL", "")
pytestmark = [
    pytest.mark.slow, pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="needs GATEWAY_TEST_POSTGRES_URL"),
]
CLAIMS = 300
DRAIN_PER_S = 100


def _admin_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh database `gw_<hex>` on the configured server, dropped at the end."""
    name = f"gw_{secrets.token_hex(6)}"
    with psycopg.connect(_admin_dsn(POSTGRES_URL), autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_dsn(POSTGRES_URL), autocommit=True,
                             connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_two_instances_drain_once_within_the_shared_rate(
    tmp_path: Path, database_url: str,
) -> None:
    sim_port, ports = free_port(), [free_port(), free_port()]
    simulator = f"http://127.0.0.1:{sim_port}"
    config = write_gateway_config(tmp_path, simulator, port=ports[0], database_url=database_url,
                                  drain_per_s=DRAIN_PER_S, drain_ramp_s=0)
    auth = pharmacy_auth(config)  # migrates once, before both instances start
    urls = [f"http://127.0.0.1:{port}" for port in ports]

    with simulator_proc(tmp_path, sim_port) as sim:
        wait_http(f"{simulator}/health", sim, tmp_path, "sim")
        set_fault(simulator, "down")
        with gateway_proc(tmp_path, config, ports[0], name="gw1"), \
                gateway_proc(tmp_path, config, ports[1], name="gw2"):
            half = CLAIMS // 2
            with ThreadPoolExecutor(2) as pool:
                batches = list(pool.map(
                    lambda i: submit_all(urls[i], auth, invoices(f"TWO{i}", half)), range(2)))
            answers = batches[0] + batches[1]
            # Two cold processes, the simulator and 40 client threads share this machine:
            # latency is the resilience tests' business, here only a generous bound.
            assert_within_deadline(answers, margin=2.0)
            assert {(a.status, a.body["status"]) for a in answers} == {(202, "queued")}
            ids = [a.body["id"] for a in answers]

            set_fault(simulator, "ok")
            wait_for("both breakers closed", lambda: all(
                _state(url, auth) == "closed" for url in urls), timeout=10)
            claims = wait_all_accepted(urls[1], auth, ids, timeout=30)
            sent = [_accepted_here(url) for url in urls]
        entries = ledger(simulator)["claims"]

    assert_each_sent_once(entries, ids, ambiguous=True)
    accepted = sorted(_accepted_at(claim) for claim in claims.values())
    span = (accepted[-1] - accepted[0]).total_seconds()
    rate = (len(accepted) - 1) / span
    print(f"{len(accepted)} accepted over {span:.2f} s: {rate:.1f}/s; drained by each: {sent}")
    assert rate <= DRAIN_PER_S * 1.1, f"{rate:.1f} claims/s over {span:.2f} s"
    assert min(sent) > 0, f"one instance drained nothing: {sent}"


def _state(url: str, auth: dict[str, str]) -> str:
    return str(board(url, auth)["state"])


def _accepted_at(claim: dict[str, object]) -> datetime:
    history = claim["history"]
    assert isinstance(history, list)
    return datetime.fromisoformat(next(h["at"] for h in history if h["status"] == "accepted"))



def _accepted_here(url: str) -> float:
    """Claims this instance settled as accepted (its own `gateway_claims_total` counter)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("gateway_claims_total{") and 'operator="opera"' in line
               and 'outcome="accepted"' in line)


def _person(order: int) -> dict[str, object]:
    """A rights request for a synthetic person born in July 1985 (NIR and date agree)."""
    from synthetic import nir_with_key, rights_body

    body = rights_body()
    body["beneficiary"] = {**body["beneficiary"], "nir": nir_with_key(f"1850775115{order:03d}")}
    return body


def test_two_processes_share_one_rights_budget_and_one_suspension(
    tmp_path: Path, database_url: str,
) -> None:
    """Issue 12: the harvesting budget is the deployment's, not each process's. Three
    people on one process and one more on the other exceed a budget of three: the key
    is suspended on both, until operations lift it from the shell."""
    from procs import gateway as run_gateway

    sim_port, ports = free_port(), [free_port(), free_port()]
    simulator = f"http://127.0.0.1:{sim_port}"
    config = write_gateway_config(tmp_path, simulator, port=ports[0], database_url=database_url)
    config.write_text(config.read_text() + "\n[limits]\nrights_people_per_key_per_hour = 3\n")
    auth = pharmacy_auth(config)
    key_id = auth["Authorization"].removeprefix("Bearer ").split(".")[0]
    urls = [f"http://127.0.0.1:{port}" for port in ports]

    def lookup(url: str, order: int) -> httpx.Response:
        return httpx.post(f"{url}/v1/rights", json=_person(order), headers=auth, timeout=10)

    with simulator_proc(tmp_path, sim_port) as sim:
        wait_http(f"{simulator}/health", sim, tmp_path, "sim")
        with gateway_proc(tmp_path, config, ports[0], name="gw1"), \
                gateway_proc(tmp_path, config, ports[1], name="gw2"):
            assert [lookup(urls[0], n).status_code for n in (1, 2)] == [200, 200]
            assert lookup(urls[1], 1).status_code == 200  # the same person costs nothing
            assert lookup(urls[1], 3).status_code == 200
            over = lookup(urls[1], 4)
            assert over.status_code == 429, over.text
            assert over.json()["type"].endswith("rights-budget-exceeded")
            for url in urls:  # suspended on both processes, for every route
                refused = httpx.get(f"{url}/v1/claims", headers=auth, timeout=10)
                assert refused.status_code == 403, refused.text
                assert refused.json()["type"].endswith("key-suspended")
            lifted = run_gateway("keys", "lift", key_id, "--config", str(config), cwd=tmp_path)
            assert lifted.returncode == 0, lifted.stderr
            for url in urls:
                assert httpx.get(f"{url}/v1/claims", headers=auth, timeout=10).status_code == 200
