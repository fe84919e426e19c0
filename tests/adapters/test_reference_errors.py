"""The reference adapter's error mapping, one transport failure or status at a time (respx)."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import respx
from adapter_samples import LAST_NAME, NIR, operator_claim, rights_request

from adapters.base import (
    ClaimOutcome,
    OperatorAdapter,
    OperatorRejected,
    OperatorUnavailable,
    RightsAnswer,
)
from adapters.reference import ReferenceAdapter, build, parse_retry_after

pytestmark = pytest.mark.anyio

BASE = "http://operator.test"
KEY = "clm_01JTEST0000000000000000001"
ACCEPTED = {"status": "accepted", "reference": "OP-1", "amc_cents": 280}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
async def adapter(anyio_backend: str) -> AsyncIterator[ReferenceAdapter]:
    async with httpx.AsyncClient(base_url=BASE) as client:
        yield ReferenceAdapter("opera", client, timeout_s=0.3)


async def _submit_error(adapter: ReferenceAdapter) -> OperatorUnavailable:
    with pytest.raises(OperatorUnavailable) as caught:
        await adapter.submit_claim(operator_claim())
    for personal in (NIR, LAST_NAME):
        assert personal not in caught.value.reason
    return caught.value


# --- successful calls: what goes on the wire --------------------------------------------


async def test_submit_sends_key_body_and_per_attempt_timeout(
    adapter: ReferenceAdapter, router: respx.MockRouter
) -> None:
    route = router.post("/claims").respond(200, json=ACCEPTED)
    claim = operator_claim()
    outcome = await adapter.submit_claim(claim)
    assert outcome == ClaimOutcome(status="accepted", reference="OP-1", amc_cents=280)
    sent = route.calls.last.request
    assert sent.headers["Idempotency-Key"] == KEY
    assert httpx.Request("POST", BASE, json=claim.body).content == sent.content
    assert sent.extensions["timeout"] == {"connect": 0.3, "read": 0.3, "write": 0.3, "pool": 0.3}


async def test_rights_parses_dates_and_guarantees(
    adapter: ReferenceAdapter, router: respx.MockRouter
) -> None:
    router.post("/rights").respond(
        200, json={"covered": True, "valid_to": "2026-12-31", "guarantees": {"PH7": 100}}
    )
    answer = await adapter.check_rights(rights_request())
    expected = RightsAnswer(covered=True, valid_to=date(2026, 12, 31), guarantees={"PH7": 100})
    assert answer == expected


async def test_rights_without_valid_to(adapter: ReferenceAdapter, router: respx.MockRouter) -> None:
    router.post("/rights").respond(200, json={"covered": False, "valid_to": None, "guarantees": {}})
    assert await adapter.check_rights(rights_request()) == RightsAnswer(covered=False)


async def test_rejected_outcome(adapter: ReferenceAdapter, router: respx.MockRouter) -> None:
    router.post("/claims").respond(200, json={"status": "rejected", "code": "R02", "label": "x"})
    assert await adapter.submit_claim(operator_claim()) == ClaimOutcome(
        status="rejected", code="R02", label="x"
    )


async def test_lookup_and_cancel_paths(adapter: ReferenceAdapter, router: respx.MockRouter) -> None:
    router.get(f"/claims/{KEY}").respond(200, json=ACCEPTED)
    cancel = router.post(f"/claims/{KEY}/cancel").respond(200, json={"status": "cancelled"})
    found = await adapter.lookup_claim(KEY)
    assert found == ClaimOutcome(status="accepted", reference="OP-1", amc_cents=280)
    assert await adapter.cancel_claim(KEY) is None
    assert cancel.call_count == 1


async def test_lookup_of_unknown_key_is_none(
    adapter: ReferenceAdapter, router: respx.MockRouter
) -> None:
    router.get(f"/claims/{KEY}").respond(404, json={"detail": "claim never received"})
    assert await adapter.lookup_claim(KEY) is None


async def test_build_gives_a_named_operator_adapter(anyio_backend: str) -> None:
    async with httpx.AsyncClient(base_url=BASE) as client:
        built = build("opera", client, 1.5)
    assert isinstance(built, ReferenceAdapter) and isinstance(built, OperatorAdapter)
    assert built.name == "opera"


# --- transport failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "ambiguous"),
    [
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("connect timeout"), False),
        (httpx.PoolTimeout("pool timeout"), False),
        (httpx.ReadTimeout("read timeout"), True),
        (httpx.WriteTimeout("write timeout"), True),
        (httpx.RemoteProtocolError("server disconnected"), True),
        (httpx.ReadError("connection reset by peer"), True),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
async def test_transport_failures(
    adapter: ReferenceAdapter, router: respx.MockRouter, error: Exception, ambiguous: bool
) -> None:
    router.post("/claims").mock(side_effect=error)
    router.post(f"/claims/{KEY}/cancel").mock(side_effect=error)
    router.get(f"/claims/{KEY}").mock(side_effect=error)
    failure = await _submit_error(adapter)
    assert (failure.ambiguous, failure.retry_after_s) == (ambiguous, None)
    assert failure.reason == f"POST /claims: {type(error).__name__}"
    for call in (adapter.cancel_claim(KEY), adapter.lookup_claim(KEY)):
        with pytest.raises(OperatorUnavailable) as caught:
            await call
        assert caught.value.ambiguous is ambiguous


# --- statuses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "headers", "ambiguous", "retry_after_s"),
    [
        (503, {"Retry-After": "7"}, False, 7.0),
        (503, {}, False, None),
        (503, {"Retry-After": "soon"}, False, None),
        (429, {"Retry-After": "30"}, False, 30.0),
        (408, {}, False, None),
        (502, {}, True, None),
        (504, {}, True, None),
        (500, {}, True, None),
        (507, {}, True, None),
    ],
)
async def test_unavailable_statuses(
    adapter: ReferenceAdapter,
    router: respx.MockRouter,
    status: int,
    headers: dict[str, str],
    ambiguous: bool,
    retry_after_s: float | None,
) -> None:
    router.post("/claims").respond(status, headers=headers, json={"detail": "nope"})
    failure = await _submit_error(adapter)
    assert (failure.ambiguous, failure.retry_after_s) == (ambiguous, retry_after_s)
    assert failure.reason == f"POST /claims: http-{status}"


async def test_503_with_http_date(adapter: ReferenceAdapter, router: respx.MockRouter) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    router.post("/claims").respond(503, headers={"Retry-After": when})
    failure = await _submit_error(adapter)
    assert failure.ambiguous is False
    assert failure.retry_after_s is not None and 115 <= failure.retry_after_s <= 120


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Wed, 21 Oct 2026 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2026 07:27:00 GMT", 0.0),  # in the past: no wait, never negative
        ("-5", None),
        ("1.5", None),
        ("tomorrow", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2026, 10, 21, 7, 28, tzinfo=UTC)
    assert parse_retry_after(value, now=now) == expected


@pytest.mark.parametrize(
    ("status", "kwargs", "label"),
    [
        (400, {"json": {"detail": "missing Idempotency-Key"}}, "missing Idempotency-Key"),
        (422, {"json": {"title": "Invalid claim", "detail": [{"loc": ["x"]}]}}, "Invalid claim"),
        (403, {"text": "<html>no</html>"}, "Forbidden"),
        (404, {"json": {"detail": "no such route"}}, "no such route"),
        (409, {"json": {"detail": "x" * 500}}, "x" * 200),
    ],
)
async def test_client_errors_are_rejections(
    adapter: ReferenceAdapter,
    router: respx.MockRouter,
    status: int,
    kwargs: dict[str, object],
    label: str,
) -> None:
    router.post("/claims").respond(status, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(OperatorRejected) as caught:
        await adapter.submit_claim(operator_claim())
    assert (caught.value.code, caught.value.label) == (f"http-{status}", label)


async def test_404_on_cancel_is_a_rejection(
    adapter: ReferenceAdapter, router: respx.MockRouter
) -> None:
    router.post(f"/claims/{KEY}/cancel").respond(404, json={"detail": "claim never received"})
    with pytest.raises(OperatorRejected) as caught:
        await adapter.cancel_claim(KEY)
    assert (caught.value.code, caught.value.label) == ("http-404", "claim never received")


# --- malformed 2xx -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"text": "<html>ok</html>"},
        {"content": b"\xff\xfe{"},
        {"json": [ACCEPTED]},
        {"json": {"status": "accepted", "reference": "OP-1"}},
        {"json": {"status": "accepted", "reference": "OP-1", "amc_cents": "280"}},
        {"json": {"status": "accepted", "reference": "OP-1", "amc_cents": True}},
        {"json": {"status": "accepted", "reference": "", "amc_cents": 280}},
        {"json": {"status": "rejected", "code": "R02"}},
        {"json": {"status": "pending"}},
        {"json": {"echo": {"nir": NIR, "last_name": LAST_NAME}}},
    ],
)
async def test_malformed_claim_answer_is_ambiguous(
    adapter: ReferenceAdapter, router: respx.MockRouter, kwargs: dict[str, object]
) -> None:
    router.post("/claims").respond(200, **kwargs)  # type: ignore[arg-type]
    failure = await _submit_error(adapter)
    assert (failure.ambiguous, failure.reason) == (True, "malformed answer to POST /claims")


@pytest.mark.parametrize(
    "body",
    [
        {"covered": "yes", "valid_to": None, "guarantees": {}},
        {"valid_to": None, "guarantees": {}},
        {"covered": True, "valid_to": "31/12/2026", "guarantees": {}},
        {"covered": True, "valid_to": 20261231, "guarantees": {}},
        {"covered": True, "valid_to": None, "guarantees": {"PH7": "100"}},
        {"covered": True, "valid_to": None, "guarantees": [100]},
    ],
)
async def test_malformed_rights_answer(
    adapter: ReferenceAdapter, router: respx.MockRouter, body: dict[str, object]
) -> None:
    router.post("/rights").respond(200, json=body)
    with pytest.raises(OperatorUnavailable) as caught:
        await adapter.check_rights(rights_request())
    assert caught.value.ambiguous is True
    assert caught.value.reason == "malformed answer to POST /rights"


@pytest.mark.parametrize("body", [{"status": "down"}, {}])
async def test_malformed_health_and_cancel(
    adapter: ReferenceAdapter, router: respx.MockRouter, body: dict[str, object]
) -> None:
    router.get("/health").respond(200, json=body)
    router.post(f"/claims/{KEY}/cancel").respond(200, json=body)
    with pytest.raises(OperatorUnavailable, match="malformed answer to GET /health"):
        await adapter.health()
    with pytest.raises(OperatorUnavailable, match="malformed answer to POST /claims/"):
        await adapter.cancel_claim(KEY)
