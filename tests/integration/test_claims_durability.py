"""A claim exists before the operator hears of it, and no input makes the gateway fail."""

from __future__ import annotations

import json

import httpx
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from sqlmodel import select
from synthetic import claim_body

from adapters.simulator import create_simulator
from gateway.keys.admin import create_key
from gateway.main import create_app
from gateway.storage.db import Database
from gateway.storage.models import Claim

pytestmark = pytest.mark.anyio


class CommitCheckingTransport(httpx.AsyncBaseTransport):
    """Forwards to the simulator, after checking that the claim sent is already committed."""

    def __init__(self, database_url: str) -> None:
        self.inner = httpx.ASGITransport(create_simulator("opera"))
        self.database = Database(database_url)
        self.seen: list[tuple[str, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/claims":
            key = request.headers["Idempotency-Key"]
            row = await self.database.read(
                lambda session: session.exec(select(Claim).where(Claim.id == key)).first()
            )
            self.seen.append((key, row.status if row else None))
        return await self.inner.handle_async_request(request)


async def test_the_claim_is_committed_before_it_is_sent(settings, anyio_backend):
    transport = CommitCheckingTransport(settings.database_url)
    # The check reads the database (a new engine: its first connection) inside the call:
    # the tests' 0.5 s attempt timed out once on a loaded CI machine (PostgreSQL), and the
    # claim was queued. What is checked here is the order, not the time.
    patient = settings.model_copy(update={"operators": [
        op.model_copy(update={"timeout_s": 10.0, "deadline_s": 15.0})
        for op in settings.operators]})
    app = create_app(patient, transports={"opera": transport}, configure_logs=False)
    async with LifespanManager(app):
        _, secret = create_key(settings, role="pharmacy", finess="330001231")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url="http://g") as http:
            response = await http.post("/v1/claims", json=claim_body("Z1"),
                                       headers={"Authorization": f"Bearer {secret}"})
    await transport.database.dispose()
    assert response.status_code == 201
    assert transport.seen == [(response.json()["id"], "pending")]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**40), 10**40)
    | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=10), children, max_size=3),
    max_leaves=8,
)


def paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


ALL_PATHS = [p for p in paths(claim_body("F0")) if p]


def replaced(path, value):
    body = claim_body("F0")
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return body


@hyp_settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(ALL_PATHS), value=json_values)
async def test_any_value_anywhere_is_answered_without_a_server_error(client, pharmacy, path,
                                                                     value):
    body = json.dumps(replaced(path, value))
    response = await client.post("/v1/claims", content=body,
                                 headers={**pharmacy, "Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json"
