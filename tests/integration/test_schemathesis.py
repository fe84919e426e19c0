"""Schemathesis against the gateway's own /openapi.json, in-process (issue 6).

Every operation of the schema is exercised through the ASGI app (no socket is opened: a
guard refuses any network connection), authenticated with a pharmacy key, or an
operations key for `/v1/operators*`. Checks: no 5xx, status code, content type, headers
and body conforming to the schema, and the declared authentication not ignored. Bounded:
the schema's examples, then MAX_EXAMPLES generated cases (valid and invalid) per
operation, derandomized so CI runs are reproducible, no deadline.

Nothing is excluded: every operation of /openapi.json is a test case. Only the console's
HTML pages are not described (on purpose, see CONSOLE_HTML), and
`test_every_api_route_is_described` fails on any other undescribed route.
Long-polling is bounded: a generated `wait` of /v1/events is lowered to at most 0.1 s
(the answer's shape does not depend on it; 30 s per example would not be bounded).
Generated cases that hit a known gateway bug (KNOWN_BUGS) are not sent; each bug has a
strict xfail of its own, to be removed with the fix. The outage answers (202), which a
fuzzer cannot reach, are checked against the schema by their own test.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, reject
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

schemathesis = pytest.importorskip("schemathesis")

from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup  # noqa: E402
from schemathesis.python import asgi as schemathesis_asgi  # noqa: E402
from simulator_control import set_fault  # noqa: E402
from synthetic import FINESS, claim_body  # noqa: E402

from gateway.keys.admin import create_key  # noqa: E402
from gateway.main import create_app  # noqa: E402
from gateway.settings import Settings  # noqa: E402

MAX_EXAMPLES = 25
MAX_WAIT_S = 0.1
BODY_LIMIT = 64 * 1024
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance", "ignored_auth"]
RESPONSE_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
                   response_headers_conformance, response_schema_conformance]
# Left out of /openapi.json on purpose: the console's HTML pages and forms (covered by
# test_object_authorization). Any other undescribed route fails the last test.
CONSOLE_HTML = "/console/"

# the hand-over's acknowledgement file (a compact JWS) is sent as the text it is
schemathesis.serializer.alias("application/jose", "text/plain")

CONFIG = schemathesis.Config.from_dict({
    "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
})
HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
          HealthCheck.function_scoped_fixture]
BOUNDED = hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                              derandomize=True, suppress_health_check=HEALTH)
BOUNDED_EXAMPLES = hypothesis_settings(BOUNDED, max_examples=10,
                                       phases=[Phase.explicit, Phase.generate])


def _no_network(original: Any) -> Any:
    def connect(sock: socket.socket, address: Any) -> Any:
        if sock.family == getattr(socket, "AF_UNIX", None):
            return original(sock, address)
        raise AssertionError(f"the schemathesis run tried to reach {address!r}")
    return connect


@pytest.fixture
def gateway_keys(settings) -> dict[str, dict[str, str]]:
    _, pharmacy = create_key(settings, role="pharmacy", finess=FINESS)
    _, operations = create_key(settings, role="operations")
    return {"pharmacy": {"Authorization": f"Bearer {pharmacy}"},
            "operations": {"Authorization": f"Bearer {operations}"}}


@pytest.fixture
def gateway_schema(settings, simulators, gateway_keys, monkeypatch) -> Iterator[Any]:
    """The schema of an app whose lifespan runs in schemathesis's own event loop thread."""
    monkeypatch.setattr(socket.socket, "connect", _no_network(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _no_network(socket.socket.connect_ex))
    limits = settings.limits.model_copy(update={
        "rights_per_minute": 10_000, "claims_per_minute": 10_000,
        "receipts_per_minute": 10_000})
    app = create_app(
        settings.model_copy(update={"limits": limits}),
        transports={name: httpx.ASGITransport(sim) for name, sim in simulators.items()},
        configure_logs=False, run_workers=False)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    finally:
        schemathesis_asgi.shutdown_lifespans()  # the app's lifespan: engine, clients


# Gateway bugs found by this run: the generated cases that hit one are not sent (each bug
# has its own strict xfail below); remove the entry with the fix.
KNOWN_BUGS: dict[str, tuple[Any, str]] = {}


def bound_long_poll(case: Any) -> None:
    if case.path == "/v1/events" and case.query and "wait" in case.query:
        wait = case.query["wait"]
        if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > MAX_WAIT_S:
            case.query["wait"] = MAX_WAIT_S


def described_paths() -> dict[str, Any]:
    """The `paths` of /openapi.json, read from a throwaway app at collection time."""
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(environment="development",
                            database_url=f"sqlite:///{directory}/unused.db",
                            data_dir=Path(directory) / "data", operators=[])
        return create_app(settings, configure_logs=False, run_workers=False).openapi()["paths"]


PATHS = described_paths()
OPERATIONS = [(method.upper(), path) for path, item in PATHS.items() for method in item]
JSON_BODIES = [(method.upper(), path) for path, item in PATHS.items()
               for method, operation in item.items()
               if "application/json" in operation.get("requestBody", {}).get("content", {})]


@pytest.mark.parametrize(("method", "path"), OPERATIONS,
                         ids=[f"{method} {path}" for method, path in OPERATIONS])
def test_the_operation_conforms_to_its_schema(gateway_schema, gateway_keys, method, path):
    operation = gateway_schema[path][method]
    role = "operations" if path.startswith("/v1/operators") else "pharmacy"
    headers = gateway_keys[role]

    def run(strategy: st.SearchStrategy[Any], bounds: hypothesis_settings) -> None:
        @bounds
        @given(case=strategy)
        def call(case: Any) -> None:
            bound_long_poll(case)
            if any(known(case) for known, _ in KNOWN_BUGS.values()):
                reject()
            case.call_and_validate(headers=headers)

        call()

    if examples := operation.get_strategies_from_examples():
        run(st.one_of(examples), BOUNDED_EXAMPLES)
    run(st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                  operation.as_strategy(GenerationMode.NEGATIVE)), BOUNDED)


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path"), JSON_BODIES,
                         ids=[f"{method} {path}" for method, path in JSON_BODIES])
async def test_a_body_that_is_not_utf8_is_a_documented_422(client, pharmacy, operations,
                                                             method, path):
    headers = operations if path.startswith("/v1/operators") else pharmacy
    answer = await client.request(
        method, path.replace("{name}", "opera"), content=b'"\xff"',
        headers={**headers, "Content-Type": "application/json"})
    assert answer.status_code == 422, f"{answer.status_code}: {answer.text}"
    assert answer.json()["errors"] == [{"field": "body", "message": "malformed JSON"}]


# The contract's answers a fuzzer cannot reach (they need an operator outage): each must be
# documented too.
UNDOCUMENTED_202 = (
    "the contract's 202 is not in /openapi.json: POST /v1/claims declares 201 and errors "
    "only (a queued claim answers 202, CONTRACT 3.1); POST /v1/claims/{claim_id}/cancel "
    "declares 200 and errors only (202 while the operator has not confirmed, 3.2)")


async def queued_claim(client: httpx.AsyncClient, pharmacy: dict[str, str],
                       simulators: dict[str, Any]) -> tuple[httpx.Response, dict[str, Any]]:
    await set_fault(simulators["opera"], "down")
    body = claim_body("SCH-Q")
    return await client.post("/v1/claims", json=body, headers=pharmacy), body


async def cancel_pending(client: httpx.AsyncClient, pharmacy: dict[str, str],
                         simulators: dict[str, Any]) -> tuple[httpx.Response, None]:
    accepted = await client.post("/v1/claims", json=claim_body("SCH-C"), headers=pharmacy)
    assert accepted.status_code == 201, accepted.text
    await set_fault(simulators["opera"], "down")
    return await client.post(f"/v1/claims/{accepted.json()['id']}/cancel",
                             headers=pharmacy), None


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path", "scenario"), [
    ("POST", "/v1/claims", queued_claim),
    ("POST", "/v1/claims/{claim_id}/cancel", cancel_pending),
], ids=["queued claim", "cancellation pending"])
async def test_outage_answers_conform_to_the_schema(app, client, pharmacy, simulators,
                                                    method, path, scenario):
    answer, body = await scenario(client, pharmacy, simulators)
    assert answer.status_code == 202, answer.text
    operation = schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)[path][method]
    case = operation.Case(body=body) if body is not None else operation.Case(
        path_parameters={"claim_id": answer.json()["id"]})
    validate(operation, case, answer)


def validate(operation: Any, case: Any, answer: httpx.Response) -> None:
    try:
        case.validate_response(answer, checks=RESPONSE_CHECKS)
    except FailureGroup as exc:  # an AssertionError reads better in pytest's report
        raise AssertionError(str(exc)) from None


def _oversized_cases() -> Iterator[Any]:
    for method, path in JSON_BODIES:
        yield pytest.param(method, path, id=f"{method} {path}")


@pytest.mark.anyio
@pytest.mark.parametrize(("method", "path"), list(_oversized_cases()))
async def test_an_oversized_body_gets_a_documented_413(app, client, pharmacy, operations,
                                                       method, path):
    headers = operations if path.startswith("/v1/operators") else pharmacy
    body = {"claim_ids": ["clm_" + "0" * 26] * 3000}
    answer = await client.request(method, path.replace("{name}", "opera"), json=body,
                                  headers=headers)
    assert answer.status_code == 413, answer.text
    operation = schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)[path][method]
    validate(operation, operation.Case(body=body, path_parameters={"name": "opera"}), answer)


def test_every_api_route_is_described(app):
    """Only the console's HTML pages and forms are left out of /openapi.json."""
    from test_object_authorization import app_routes

    served = {(method, path) for method, path in app_routes(app)
              if method != "*" and not path.startswith(("/openapi.json", "/docs", "/redoc"))}
    undescribed = served - set(OPERATIONS)
    assert all(path.startswith(CONSOLE_HTML) for _, path in undescribed), undescribed
    assert set(OPERATIONS) <= served
