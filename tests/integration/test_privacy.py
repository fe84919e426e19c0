"""Personal data never at rest in clear, never in logs, never echoed in errors."""

from __future__ import annotations

import httpx
import pytest
from asgi_lifespan import LifespanManager
from simulator_control import set_fault
from sqlalchemy import create_engine, text
from synthetic import PEOPLE, claim_body, rights_body

from gateway.keys.admin import create_key
from gateway.main import create_app
from gateway.storage.db import is_sqlite, sync_url

pytestmark = pytest.mark.anyio

SECRETS = [value for person in PEOPLE
           for value in (person["nir"], person["last_name"], person["first_name"],
                         person["birth_date"])]
TABLES = ("claims", "claim_history", "rights_cache", "api_keys")


def raw_database_text(url: str) -> str:
    """Everything the database holds, as the bytes on disk (SQLite) or every row (PostgreSQL)."""
    if is_sqlite(url):
        path = url.removeprefix("sqlite:///")
        data = b""
        for suffix in ("", "-wal"):
            try:
                with open(path + suffix, "rb") as handle:
                    data += handle.read()
            except FileNotFoundError:
                pass
        return data.decode("latin-1") + data.decode("utf-8", errors="ignore")
    engine = create_engine(sync_url(url))
    with engine.connect() as connection:
        rows = [str(row) for table in TABLES
                for row in connection.execute(text(f"SELECT * FROM {table}"))]  # noqa: S608
    engine.dispose()
    return "\n".join(rows)


async def full_scenario(settings, simulators) -> list[httpx.Response]:
    transports = {name: httpx.ASGITransport(sim) for name, sim in simulators.items()}
    app = create_app(settings, transports=transports, configure_logs=True)
    responses = []
    async with LifespanManager(app):
        _, secret = create_key(settings, role="pharmacy", finess="330001231")
        headers = {"Authorization": f"Bearer {secret}"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url="http://gateway.test") as client:
            for person in range(len(PEOPLE)):
                responses.append(await client.post(
                    "/v1/claims", json=claim_body(f"P{person}", person=person), headers=headers))
                responses.append(await client.post(
                    "/v1/rights", json=rights_body(person=person), headers=headers))
            bad = claim_body("P9", person=1)
            bad["lines"][0]["amc_cents"] = 9999
            responses.append(await client.post("/v1/claims", json=bad, headers=headers))
            await set_fault(simulators["opera"], "down")
            responses.append(await client.post("/v1/claims", json=claim_body("P8", person=2),
                                               headers=headers))
            responses.append(await client.post("/v1/rights", json=rights_body(person=0),
                                               headers=headers))
            listed = await client.get("/v1/claims", headers=headers)
            responses.append(listed)
            for claim in listed.json()["claims"]:
                responses.append(await client.get(f"/v1/claims/{claim['id']}", headers=headers))
    return responses


async def test_no_personal_data_in_the_database_logs_or_answers(settings, simulators, capfd,
                                                                 anyio_backend):
    responses = await full_scenario(settings, simulators)
    assert [r.status_code for r in responses[:6]] == [201, 200] * 3
    assert responses[6].status_code == 422 and responses[7].status_code == 202
    assert responses[8].json()["source"] == "cache"
    at_rest = raw_database_text(settings.database_url)
    assert "clm_" in at_rest  # the scan does read the data
    logs = capfd.readouterr()
    assert "claim.answered" in logs.err  # the scan does read the logs
    answers = "\n".join(r.text for r in responses)
    for secret in SECRETS:
        assert secret not in at_rest, f"{secret!r} in clear in the database"
        assert secret not in logs.out + logs.err, f"{secret!r} in the logs"
        assert secret not in answers, f"{secret!r} in an API answer"


def test_the_log_processor_drops_personal_keys(capsys):
    import structlog

    from gateway.observability.logs import configure_logging

    configure_logging("INFO")
    structlog.get_logger("t").info("oops", nir=PEOPLE[0]["nir"], last_name="Martin",
                                   beneficiary={"x": 1}, claim_id="clm_1")
    err = capsys.readouterr().err
    assert PEOPLE[0]["nir"] not in err and "Martin" not in err
    assert "clm_1" in err and "[redacted]" in err
