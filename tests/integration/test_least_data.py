"""Least data out (issue 12): an operator's free text is never stored, logged, returned or
shown (codes and the gateway's own messages are); whatever logs through the standard
library (uvicorn, libraries, an uncaught exception) is masked; failed claims are purged
after retention like settled ones; personal data and receipts are never cached."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from console_people import log_in, make_person
from simulator_control import set_fault
from sqlalchemy import text, update
from sqlmodel import col
from synthetic import PEOPLE, claim_body, rights_body

from adapters.simulator import create_simulator
from gateway.main import create_app
from gateway.observability.logs import PersonalDataFilter, scrub
from gateway.storage.db import Database
from gateway.storage.models import Claim, utcnow
from gateway.storage.retention import purge

pytestmark = pytest.mark.anyio
SENTINEL = "Martin Claire 185077511512396 née le 14/07/1985"


def operator_saying(sentinel: str) -> httpx.MockTransport:
    """An operator whose refusals repeat the person: a business rejection with a label,
    and for invoices starting with "P", a 422 problem whose detail does the same."""
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(200, json={"status": "ok"})
        body = json.loads(request.content or b"{}")
        if str(body.get("invoice_number", "")).startswith("P"):
            return httpx.Response(422, json={"title": sentinel, "detail": sentinel})
        return httpx.Response(200, json={"status": "rejected", "code": "R02",
                                         "label": sentinel})
    return httpx.MockTransport(answer)


@pytest.fixture
async def chatty_app(settings) -> AsyncIterator:
    transports = {"opera": operator_saying(SENTINEL),
                  "santex": httpx.ASGITransport(create_simulator("santex"))}
    application = create_app(settings, transports=transports, configure_logs=False,
                             run_workers=False)
    async with LifespanManager(application):
        yield application


def database_text(settings) -> str:
    database = Database(settings.database_url)
    try:
        return database.read_now(lambda s: "\n".join(
            str(row) for table in ("claims", "claim_history", "events", "audit_log")
            for row in s.execute(text(f"SELECT * FROM {table}"))))  # noqa: S608
    finally:
        database.engine.dispose()


async def test_an_operators_words_about_a_person_go_nowhere(chatty_app, settings, capsys):
    from gateway.keys.admin import create_key

    _, secret = create_key(settings, role="pharmacy", finess="330001231")
    pharmacy = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(chatty_app),
                                 base_url="http://gateway.test") as http:
        rejected = await http.post("/v1/claims", json=claim_body("REJ1"), headers=pharmacy)
        refused = await http.post("/v1/claims", json=claim_body("P4221"), headers=pharmacy)
        assert rejected.status_code == 201 and refused.status_code == 502  # operator-refused
        assert rejected.json()["rejection"] == {"code": "R02",
                                                "label": "Droits fermés ou carte expirée"}
        detail = await http.get(f"/v1/claims/{rejected.json()['id']}", headers=pharmacy)
        listing = await http.get("/v1/claims", headers=pharmacy)
        answers = [rejected.text, refused.text, detail.text, listing.text]
        person = make_person(settings)
        await log_in(http, person)
        pages = [(await http.get("/console/")).text,
                 (await http.get(f"/console/claims/{rejected.json()['id']}")).text]
    assert "http-422" in refused.json()["detail"]
    for where, content in [("answers", "\n".join(answers)), ("pages", "\n".join(pages)),
                           ("database", database_text(settings)),
                           ("logs", "".join(capsys.readouterr()))]:
        assert SENTINEL not in content, where
        assert "185077511512396" not in content, where


async def test_the_standard_librarys_records_are_masked(caplog):
    nir, secret = PEOPLE[0]["nir"], "key_0123456789abcdef.s3cr3t-part_of-it"
    logger = logging.getLogger("uvicorn.error")
    handler_filter = PersonalDataFilter()
    caplog.handler.addFilter(handler_filter)
    try:
        try:
            raise ValueError(f"could not parse {nir} for {secret}")
        except ValueError:
            logger.exception("Exception in ASGI application %s", nir)
    finally:
        caplog.handler.removeFilter(handler_filter)
    record = caplog.records[-1]
    shown = caplog.handler.format(record)
    assert nir not in shown and "s3cr3t" not in shown
    assert "key_0123456789abcdef" in shown and "ValueError" in shown  # still useful
    assert scrub("2B corsica 253072B07300470") == "2B corsica [redacted]"


async def test_failed_claims_are_purged_after_retention(app, client, pharmacy, settings,
                                                        simulators):
    await set_fault(simulators["opera"], "down")
    queued = (await client.post("/v1/claims", json=claim_body("F1"), headers=pharmacy)).json()
    ctx = app.state.context

    def fail_long_ago(session):
        session.execute(update(Claim).where(col(Claim.id) == queued["id"]).values(
            status="failed", updated_at=utcnow() - timedelta(days=settings.retention_days + 1)))
        return purge(session, now=utcnow(), retention_days=settings.retention_days,
                     rights_cache_days=settings.provisional.rights_cache_days)

    report = await ctx.db.write(fail_long_ago)
    assert report.claims == 1
    claim = ctx.db.read_now(lambda s: s.get(Claim, queued["id"]))
    assert claim.payload_enc == b"" and claim.nir_hash == "" and claim.purged_at is not None
    assert (claim.status, claim.amc_requested_cents) == ("failed", queued["amc_requested_cents"])


async def test_personal_data_and_receipts_are_never_cached(app, client, pharmacy, settings,
                                                           simulators):
    await set_fault(simulators["opera"], "down")
    queued = (await client.post("/v1/claims", json=claim_body("NS1"), headers=pharmacy)).json()
    receipt = queued["coverage"]["receipt"]
    answers = [
        await client.get(f"/v1/claims/{queued['id']}", headers=pharmacy),
        await client.get("/v1/claims", headers=pharmacy),
        await client.post("/v1/rights", json=rights_body(), headers=pharmacy),
        await client.get(f"/v1/receipts/{receipt['id']}"),
        await client.get(f"/v1/receipts/{receipt['id']}", headers={"Accept": "text/html"}),
        await client.get(f"/console/receipts/{receipt['id']}/print", headers=pharmacy),
        await client.get("/console/login"),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.request.url
        assert answer.headers["cache-control"] == "no-store", answer.request.url
    jwks = await client.get("/.well-known/jwks.json")
    assert jwks.headers.get("cache-control") != "no-store"


def test_uvicorn_and_uncaught_errors_go_through_the_filter() -> None:
    """In a process set up as `gateway serve` sets itself up: uvicorn's loggers write
    through the gateway's filtered handler (serve runs uvicorn with log_config=None)."""
    import subprocess
    import sys

    nir = PEOPLE[0]["nir"]
    script = (
        "import logging\n"
        "from gateway.observability.logs import configure_logging\n"
        "configure_logging('INFO')\n"
        "try:\n"
        f"    raise RuntimeError('bad row {nir}')\n"
        "except RuntimeError:\n"
        "    logging.getLogger('uvicorn.error').exception('Exception in ASGI application')\n"
        f"logging.getLogger('sqlalchemy.engine').warning('parameters (%s,)', '{nir}')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,  # noqa: S603
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "Exception in ASGI application" in done.stderr and "RuntimeError" in done.stderr
    assert "parameters" in done.stderr
    assert nir not in done.stderr
