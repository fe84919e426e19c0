"""`/metrics`: the gauges and counters of CONTRACT.md 3.7, and no personal data."""

from __future__ import annotations

import re

import pytest
from pydantic import SecretStr
from simulator_control import set_fault
from synthetic import PEOPLE, claim_body, rights_body
from test_drain import gateway

pytestmark = pytest.mark.anyio


def value(text: str, name: str, default: float | None = None, **labels: str) -> float:
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{name}\{{{re.escape(selector)}\}} (\S+)$", text, re.MULTILINE)
    if match is None and default is not None:
        return default
    assert match, f"{name}{{{selector}}} not in metrics"
    return float(match.group(1))


async def test_metrics_report_breakers_queues_and_outcomes(app, client, pharmacy, simulators):
    before = (await client.get("/metrics")).text
    accepted_before = value(before, "gateway_claims_total", 0.0, operator="opera",
                            outcome="accepted")
    await client.post("/v1/claims", json=claim_body("M1"), headers=pharmacy)
    await set_fault(simulators["opera"], "down")
    await client.post("/v1/claims", json=claim_body("M2"), headers=pharmacy)
    app.state.context.operators.get("santex").breaker.trip()
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert value(text, "gateway_breaker_state", operator="opera") == 0
    assert value(text, "gateway_breaker_state", operator="santex") == 2
    assert value(text, "gateway_queue_depth", operator="opera") == 1
    assert value(text, "gateway_queue_depth", operator="santex") == 0
    assert value(text, "gateway_queue_oldest_age_seconds", operator="opera") >= 0
    assert value(text, "gateway_claims_total", operator="opera",
                 outcome="accepted") == accepted_before + 1
    assert value(text, "gateway_claims_total", operator="opera", outcome="queued") >= 1
    assert "gateway_request_duration_seconds_bucket" in text
    writes = re.search(r"^gateway_write_group_works_count (\S+)$", text, re.MULTILINE)
    busy = re.search(r"^gateway_write_group_seconds_sum (\S+)$", text, re.MULTILINE)
    assert writes and float(writes.group(1)) >= 2  # at least the two claims stored
    assert busy and float(busy.group(1)) > 0
    assert 'route="/v1/claims"' in text and "clm_" not in text
    for person in PEOPLE:
        assert person["nir"] not in text and person["last_name"] not in text


async def test_metrics_name_no_key_id(client, pharmacy):
    """Issue 12: `gateway_rights_unusual_total{key_id}` told a harvester its key was flagged."""
    await client.post("/v1/rights", json=rights_body(), headers=pharmacy)
    text = (await client.get("/metrics")).text
    key_id = pharmacy["Authorization"].removeprefix("Bearer ").split(".")[0]
    assert 'key_id="' not in text and key_id not in text  # no such label, no key id at all
    assert not re.search(r"key_[0-9a-f]{16}", text)
    assert "gateway_rights_unusual_total" not in text
    assert value(text, "gateway_rights_budget_exceeded_total", scope="pharmacy") >= 0


async def test_a_metrics_token_is_required_once_set(settings, simulators):
    token = "m3trics-" + "x" * 32
    guarded = settings.model_copy(update={"metrics_token": SecretStr(token)})
    async with gateway(guarded, simulators) as (app, http):
        for authorization in ("", "Bearer wrong", f"Basic {token}", f"Bearer {token}x"):
            refused = await http.get("/metrics", headers={"Authorization": authorization})
            assert refused.status_code == 401, authorization
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            assert "gateway_" not in refused.text
        scraped = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert scraped.status_code == 200 and "gateway_breaker_state" in scraped.text
        assert (await http.get("/healthz", headers={"Authorization": ""})).status_code == 200
