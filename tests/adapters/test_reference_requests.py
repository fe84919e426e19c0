"""What the reference adapter puts on the wire: it builds its requests itself (cheaper
than `client.request`), so the base URL's path, the client's headers and the timeout
must still be there, as `client.request` would have sent them."""

from __future__ import annotations

import json

import httpx
import pytest
from adapter_samples import operator_claim

from adapters.reference import ReferenceAdapter

pytestmark = pytest.mark.anyio

ACCEPTED = {"status": "accepted", "reference": "OP-1", "amc_cents": 280}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_requests_keep_base_path_client_headers_and_timeout() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/cancel"):
            return httpx.Response(200, json={"status": "cancelled"})
        return httpx.Response(200, json=ACCEPTED)

    async with httpx.AsyncClient(base_url="http://operator.test/api/v2",
                                 headers={"X-Operator-Account": "acct-7"},
                                 transport=httpx.MockTransport(answer)) as client:
        adapter = ReferenceAdapter("opera", client, timeout_s=1.5)
        claim = operator_claim("clm/01")
        await adapter.submit_claim(claim)
        await adapter.submit_claim(claim)  # the joined URL, kept, is the same
        await adapter.lookup_claim("clm/01")
        await adapter.cancel_claim("clm/02")

    assert [(r.method, r.url.raw_path) for r in seen] == [
        ("POST", b"/api/v2/claims"), ("POST", b"/api/v2/claims"),
        ("GET", b"/api/v2/claims/clm%2F01"), ("POST", b"/api/v2/claims/clm%2F02/cancel")]
    first = seen[0]
    assert first.headers["X-Operator-Account"] == "acct-7"
    assert first.headers["Idempotency-Key"] == "clm/01"
    assert first.headers["Content-Type"] == "application/json"
    assert json.loads(first.content) == claim.body
    assert first.extensions["timeout"] == httpx.Timeout(1.5).as_dict()
    assert "Idempotency-Key" not in seen[2].headers  # one request's headers stay its own
