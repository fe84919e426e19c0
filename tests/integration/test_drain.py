"""The drain and the breaker in-process: recovery, order, pacing, pause, lookups, give-up."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from simulator_control import ledger, set_fault
from synthetic import claim_body

from gateway.claims import repository
from gateway.keys.admin import create_key
from gateway.main import create_app
from gateway.storage.db import Database
from gateway.storage.models import utcnow

pytestmark = pytest.mark.anyio
FAST = {"timeout_s": 0.2, "deadline_s": 0.4, "breaker_fail_max": 3, "breaker_reset_s": 0.3,
        "breaker_reset_max_s": 0.6, "probe_interval_s": 0.2, "drain_per_s": 200,
        "drain_ramp_s": 0}


@asynccontextmanager
async def gateway(settings, simulators, *, workers: bool = True, **overrides):
    """The gateway with FAST operators (`overrides` on top); `workers=False`: without its
    drain, prober and other background workers."""
    operators = [op.model_copy(update={**FAST, **overrides}) for op in settings.operators]
    fast = settings.model_copy(update={"operators": operators})
    transports = {name: httpx.ASGITransport(sim) for name, sim in simulators.items()}
    app = create_app(fast, transports=transports, configure_logs=False, run_workers=workers)
    async with LifespanManager(app):
        _, secret = create_key(fast, role="pharmacy", finess="330001231")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url="http://g") as http:
            http.headers["Authorization"] = f"Bearer {secret}"
            yield app, http


async def wait_until(predicate, timeout=10.0):  # noqa: ASYNC109 - a polling helper
    loop = asyncio.get_running_loop()
    ends = loop.time() + timeout
    while loop.time() < ends:
        if await predicate():
            return True
        await asyncio.sleep(0.05)
    return False


async def statuses(http, ids):
    return [(await http.get(f"/v1/claims/{i}")).json()["status"] for i in ids]


async def test_outage_then_recovery_drains_everything_oldest_first(settings, simulators):
    # 20/s: sends 50 ms apart, so they also reach the operator in their order.
    async with gateway(settings, simulators, drain_per_s=20) as (app, http):
        await set_fault(simulators["opera"], "down")
        ids = []
        for index in range(12):
            response = await http.post("/v1/claims", json=claim_body(f"R{index}"))
            assert response.status_code == 202
            ids.append(response.json()["id"])
        board = {o["name"]: o for o in (await http.get("/v1/operators")).json()}
        assert board["opera"]["state"] in ("open", "half_open")
        before = (await ledger(simulators["opera"]))["received"]
        assert before == 0
        await set_fault(simulators["opera"], "ok")
        assert await wait_until(lambda: _all(http, ids, "accepted"))
        entries = (await ledger(simulators["opera"]))["claims"]
        assert [e["key"] for e in entries] == ids  # oldest first
        assert all(e["count"] == 1 for e in entries)


async def _all(http, ids, status):
    return all(s == status for s in await statuses(http, ids))


async def test_an_open_breaker_answers_at_once_without_the_operator(settings, simulators):
    """The operator hangs, and the gateway would wait 5 s for it: an answer in less than
    half of that came without it, however loaded the machine (a bound of 0.2 s, against a
    0.2 s timeout, was a wall-clock race)."""
    async with gateway(settings, simulators, timeout_s=5.0, deadline_s=10.0,
                       breaker_reset_s=30, breaker_reset_max_s=30) as (app, http):
        await set_fault(simulators["opera"], "down")
        for index in range(3):
            await http.post("/v1/claims", json=claim_body(f"T{index}"))
        assert app.state.context.operators.get("opera").breaker.state == "open"
        await set_fault(simulators["opera"], "hang")
        received = (await ledger(simulators["opera"]))["received"]
        loop = asyncio.get_running_loop()
        began = loop.time()
        response = await http.post("/v1/claims", json=claim_body("T9"))
        assert response.status_code == 202 and loop.time() - began < 2.5
        assert (await ledger(simulators["opera"]))["received"] == received


async def test_the_drain_respects_drain_per_s(settings, simulators):
    async with gateway(settings, simulators, drain_per_s=10) as (app, http):
        await http.post("/v1/operators/opera/pause", headers=await ops_headers(settings))
        ids = [(await http.post("/v1/claims", json=claim_body(f"P{i}"))).json()["id"]
               for i in range(15)]
        loop = asyncio.get_running_loop()
        await http.post("/v1/operators/opera/resume", headers=await ops_headers(settings))
        began = loop.time()
        assert await wait_until(lambda: _all(http, ids, "accepted"), timeout=15)
        elapsed = loop.time() - began
        assert elapsed >= 1.3  # 15 claims at 10/s: the 15th is sent 1.4 s after the first


async def ops_headers(settings):
    _, secret = create_key(settings, role="operations")
    return {"Authorization": f"Bearer {secret}"}


def count_steps(app, operator: str) -> list[bool]:
    """What each step of the operator's running drain worker returned, from now on
    (False: it found nothing to do)."""
    worker = app.state.context.drains[operator]
    real, results = worker.step, []

    async def step() -> bool:
        worked = await real()
        results.append(worked)
        return worked

    worker.step = step  # the worker's loop looks its step up at every turn
    return results


async def test_a_paused_operator_gets_nothing(settings, simulators):
    async with gateway(settings, simulators) as (app, http):
        headers = await ops_headers(settings)
        await http.post("/v1/operators/opera/pause", headers=headers)
        claim = (await http.post("/v1/claims", json=claim_body("Z1"))).json()
        steps = count_steps(app, "opera")

        async def two_idle_steps() -> bool:  # the second began after the claim was stored
            return len(steps) >= 2

        assert await wait_until(two_idle_steps)
        assert steps[:2] == [False, False]  # the drain looked, and sent nothing
        assert (await ledger(simulators["opera"]))["received"] == 0
        assert (await statuses(http, [claim["id"]])) == ["queued"]
        await http.post("/v1/operators/opera/resume", headers=headers)
        assert await wait_until(lambda: _all(http, [claim["id"]], "accepted"))


async def test_an_ambiguous_failure_is_looked_up_not_resent(settings, simulators):
    async with gateway(settings, simulators) as (app, http):
        await set_fault(simulators["opera"], "ambiguous")
        claim = (await http.post("/v1/claims", json=claim_body("A1"))).json()
        assert claim["status"] == "queued"
        await set_fault(simulators["opera"], "ok")
        assert await wait_until(lambda: _all(http, [claim["id"]], "accepted"))
        entry = (await ledger(simulators["opera"]))["claims"][0]
        assert (entry["count"], entry["lookups"]) == (1, 1)


async def test_an_expired_lease_is_taken_again_and_looked_up(settings, simulators):
    async with gateway(settings, simulators) as (app, http):
        headers = await ops_headers(settings)
        await http.post("/v1/operators/opera/pause", headers=headers)
        claim = (await http.post("/v1/claims", json=claim_body("L1"))).json()
        # A sender sent it, then died before recording the answer.
        body = {**claim_body("L1"), "claim_id": claim["id"]}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(simulators["opera"]),
                                     base_url="http://sim") as sim:
            sent = await sim.post("/claims", json=body, headers={"Idempotency-Key": claim["id"]})
            assert sent.json()["status"] == "accepted"
        database = Database(settings.database_url)

        def crashed_sender(session):
            row = repository.load(session, claim["id"])
            row.status, row.lease_owner = "pending", "a-dead-instance"
            row.lease_until = utcnow() - timedelta(seconds=1)
            session.add(row)

        database.write_now(crashed_sender)
        database.engine.dispose()
        await http.post("/v1/operators/opera/resume", headers=headers)
        assert await wait_until(lambda: _all(http, [claim["id"]], "accepted"))
        entry = (await ledger(simulators["opera"]))["claims"][0]
        assert entry["lookups"] == 1 and entry["count"] == 1


async def test_a_claim_fails_after_max_attempts_and_waits_for_operations(settings, simulators):
    async with gateway(settings, simulators, max_attempts=2, breaker_fail_max=50,
                       probe_interval_s=100) as (app, http):
        await set_fault(simulators["opera"], "error")
        claim = (await http.post("/v1/claims", json=claim_body("X1"))).json()
        assert await wait_until(lambda: _all(http, [claim["id"]], "failed"), timeout=15)
        detail = (await http.get(f"/v1/claims/{claim['id']}")).json()
        assert detail["history"][-1]["detail"].startswith("gave up after 2 attempts")
        events = (await http.get("/v1/events")).json()["events"]
        assert [e["type"] for e in events] == ["claim.queued", "receipt.issued", "claim.failed"]


async def test_a_deferred_cancellation_is_sent_once_the_operator_is_back(settings, simulators):
    async with gateway(settings, simulators, breaker_fail_max=50,
                       probe_interval_s=100) as (app, http):
        claim = (await http.post("/v1/claims", json=claim_body("K1"))).json()
        await set_fault(simulators["opera"], "down")
        response = await http.post(f"/v1/claims/{claim['id']}/cancel")
        assert response.status_code == 202
        await set_fault(simulators["opera"], "ok")
        assert await wait_until(lambda: _all(http, [claim["id"]], "cancelled"))
        assert (await ledger(simulators["opera"]))["claims"][0]["cancelled"] is True
