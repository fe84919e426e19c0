"""The operator contract (CONTRACT.md section 4), run against every adapter factory."""

from __future__ import annotations

import re
import socket
import time
from datetime import date

import httpx
import pytest
from adapter_harness import Factory, Harness
from adapter_samples import SECOND_LINE, operator_claim, rights_request

from adapters.base import (
    ClaimOutcome,
    OperatorAdapter,
    OperatorRejected,
    OperatorUnavailable,
    RightsAnswer,
)
from adapters.reference import ReferenceAdapter

pytestmark = pytest.mark.anyio

R02 = ClaimOutcome(status="rejected", code="R02", label="Droits fermés ou carte expirée")
R03 = ClaimOutcome(status="rejected", code="R03", label="Date de soins hors période de validité")
KEY = "clm_01JTEST0000000000000000001"


def _entry(key: str = KEY, *, count: int = 1, status: str = "accepted",
           cancelled: bool = False, lookups: int = 0) -> dict[str, object]:
    return {"key": key, "count": count, "status": status, "cancelled": cancelled,
            "lookups": lookups}


async def test_is_an_operator_adapter(harness: Harness) -> None:
    assert isinstance(harness.adapter, OperatorAdapter)
    assert harness.adapter.name == "opera"


async def test_health(harness: Harness) -> None:
    assert await harness.adapter.health() is None


async def test_rights_covered(harness: Harness) -> None:
    answer = await harness.adapter.check_rights(rights_request())
    assert answer == RightsAnswer(
        covered=True, valid_to=date(2026, 12, 31),
        guarantees={"PH7": 100, "PH4": 100, "PH1": 100, "PH2": 0, "PMR": 100},
    )
    assert (await harness.control.ledger())["rights"] == 1


async def test_rights_not_covered(harness: Harness) -> None:
    answer = await harness.adapter.check_rights(rights_request(member_number="REJ0042"))
    assert answer == RightsAnswer(covered=False, valid_to=None, guarantees={})


async def test_claim_accepted_pays_the_sum_of_the_lines(harness: Harness) -> None:
    first = await harness.adapter.submit_claim(operator_claim(extra_lines=[SECOND_LINE]))
    second = await harness.adapter.submit_claim(operator_claim("clm_other"))
    assert (first.status, first.amc_cents, first.code, first.label) == ("accepted", 430, None, None)
    assert (second.status, second.amc_cents) == ("accepted", 280)
    assert first.reference and second.reference
    pattern = rf"{re.escape(harness.operator)}-(\d{{8}})"
    n1 = int(re.fullmatch(pattern, first.reference).group(1))  # type: ignore[union-attr]
    n2 = int(re.fullmatch(pattern, second.reference).group(1))  # type: ignore[union-attr]
    assert n2 == n1 + 1


async def test_claim_rejected_when_rights_closed(harness: Harness) -> None:
    outcome = await harness.adapter.submit_claim(operator_claim(member_number="REJ0042"))
    assert outcome == R02
    assert (await harness.control.ledger())["claims"] == [_entry(status="rejected")]


@pytest.mark.parametrize("service_date", ["2027-01-01", "2025-12-31"])
async def test_claim_rejected_outside_card_validity(harness: Harness, service_date: str) -> None:
    assert await harness.adapter.submit_claim(operator_claim(service_date=service_date)) == R03


async def test_boundary_dates_are_inside_validity(harness: Harness) -> None:
    for i, day in enumerate(["2026-01-01", "2026-12-31"]):
        outcome = await harness.adapter.submit_claim(operator_claim(f"k{i}", service_date=day))
        assert outcome.status == "accepted"


async def test_resend_with_same_key_gets_first_answer(harness: Harness) -> None:
    first = await harness.adapter.submit_claim(operator_claim())
    again = await harness.adapter.submit_claim(operator_claim(member_number="REJ0042"))
    assert again == first
    ledger = await harness.control.ledger()
    assert ledger["claims"] == [_entry(count=2)]
    assert ledger["received"] == 2


async def test_lookup_known_key_returns_first_answer(harness: Harness) -> None:
    first = await harness.adapter.submit_claim(operator_claim())
    assert await harness.adapter.lookup_claim(KEY) == first
    assert (await harness.control.ledger())["claims"] == [_entry(lookups=1)]


async def test_lookup_unknown_key_is_none(harness: Harness) -> None:
    assert await harness.adapter.lookup_claim("clm_never_sent") is None


async def test_cancel(harness: Harness) -> None:
    await harness.adapter.submit_claim(operator_claim())
    assert await harness.adapter.cancel_claim(KEY) is None
    assert (await harness.control.ledger())["claims"] == [_entry(cancelled=True)]


async def test_cancel_unknown_key_is_refused(harness: Harness) -> None:
    with pytest.raises(OperatorRejected) as caught:
        await harness.adapter.cancel_claim("clm_never_sent")
    assert caught.value.code == "http-404"


async def test_ledger_holds_no_personal_data(harness: Harness) -> None:
    await harness.adapter.submit_claim(operator_claim())
    await harness.adapter.check_rights(rights_request())
    text = str(await harness.control.ledger())
    for personal in ("185077511512396", "Martin", "Claire", "1985-07-14", "A123456"):
        assert personal not in text


async def test_down_is_unavailable_not_ambiguous_and_nothing_recorded(harness: Harness) -> None:
    await harness.control.faults("down")
    with pytest.raises(OperatorUnavailable) as caught:
        await harness.adapter.submit_claim(operator_claim())
    assert (caught.value.ambiguous, caught.value.retry_after_s) == (False, 1.0)
    with pytest.raises(OperatorUnavailable):
        await harness.adapter.health()
    ledger = await harness.control.ledger()
    assert (ledger["claims"], ledger["received"]) == ([], 0)


async def test_error_is_unavailable_and_nothing_recorded(harness: Harness) -> None:
    await harness.control.faults("error")
    with pytest.raises(OperatorUnavailable) as caught:
        await harness.adapter.submit_claim(operator_claim())
    assert caught.value.ambiguous is True  # a 500 may have been processed, as far as we know
    assert (await harness.control.ledger())["received"] == 0


async def test_ambiguous_records_the_claim_so_a_lookup_finds_it(harness: Harness) -> None:
    await harness.control.faults("ambiguous")
    with pytest.raises(OperatorUnavailable) as caught:
        await harness.adapter.submit_claim(operator_claim())
    assert caught.value.ambiguous is True
    ledger = await harness.control.ledger()
    assert (ledger["claims"], ledger["received"]) == ([_entry()], 1)
    await harness.control.faults("ok")
    found = await harness.adapter.lookup_claim(KEY)
    assert found is not None
    assert (found.status, found.amc_cents) == ("accepted", 280)


async def test_flaky_fails_at_rate_one_and_succeeds_at_rate_zero(harness: Harness) -> None:
    await harness.control.faults("flaky", error_rate=1.0)
    with pytest.raises(OperatorUnavailable):
        await harness.adapter.health()
    await harness.control.faults("flaky", error_rate=0.0)
    await harness.adapter.health()


async def test_slow_below_timeout_succeeds(make_harness: Factory, anyio_backend: str) -> None:
    async with make_harness(timeout_s=2.0) as h:
        await h.control.faults("slow", latency_ms=200)
        started = time.monotonic()
        outcome = await h.adapter.submit_claim(operator_claim())
        assert outcome.status == "accepted"
        assert time.monotonic() - started >= 0.2


@pytest.mark.slow
async def test_hang_times_out_as_ambiguous(
    make_socket_harness: Factory, anyio_backend: str
) -> None:
    async with make_socket_harness(timeout_s=0.3) as h:
        await h.control.faults("hang")
        started = time.monotonic()
        with pytest.raises(OperatorUnavailable) as caught:
            await h.adapter.submit_claim(operator_claim())
        assert time.monotonic() - started < 1.2
        assert caught.value.ambiguous is True
        assert "ReadTimeout" in caught.value.reason
        await h.control.faults("ok")
        assert (await h.control.ledger())["received"] == 0  # the hang ended with the client


@pytest.mark.slow
async def test_refused_connection_is_not_ambiguous(anyio_backend: str) -> None:
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=url) as client:
            with pytest.raises(OperatorUnavailable) as caught:
                await ReferenceAdapter("opera", client, 0.5).submit_claim(operator_claim())
    assert caught.value.ambiguous is False
