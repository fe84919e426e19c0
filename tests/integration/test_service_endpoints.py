"""Health, readiness, OpenAPI and problem+json for the framework's own errors."""

from __future__ import annotations

import httpx
import pytest
from asgi_lifespan import LifespanManager
from console_people import make_person, post_password

from gateway.main import create_app

pytestmark = pytest.mark.anyio


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"


async def test_readiness_fails_when_the_database_is_unreachable(settings, tmp_path):
    broken = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/no/such/dir/x.db"})
    app = create_app(broken, configure_logs=False)
    async with LifespanManager(app):
        # The directory and the (empty, 0600) file exist only once the engine made them;
        # remove both to break the database.
        (tmp_path / "no/such/dir/x.db").unlink()
        (tmp_path / "no/such/dir").rmdir()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app),
                                     base_url="http://g") as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["database"] == "unreachable"


async def test_openapi_documents_every_body_with_an_example(client):
    spec = (await client.get("/openapi.json")).json()
    bodies = 0
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if "requestBody" not in operation:
                continue
            bodies += 1
            content = operation["requestBody"]["content"]
            if "application/json" not in content:  # a FHIR resource, or the hand-over's
                # acknowledgement file: an example for each media type
                assert all(media.get("example") for media in content.values()), (method, path)
                continue
            schema = content["application/json"]["schema"]
            ref = schema.get("$ref") or schema["anyOf"][0]["$ref"]  # optional bodies: anyOf
            schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
            assert schema.get("examples"), f"{method.upper()} {path} has no example"
    assert bodies >= 4
    assert "bearerAuth" in str(spec["components"]["securitySchemes"]) or \
        spec["components"]["securitySchemes"]
    assert "application/problem+json" in str(spec["paths"]["/v1/claims"]["post"]["responses"])
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_framework_errors_are_problem_json(client, pharmacy):
    missing = await client.get("/v1/nowhere")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    wrong_method = await client.delete("/v1/claims", headers=pharmacy)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["status"] == 405


@pytest.mark.parametrize("url", ["/v1/claims?operator=%00", "/v1/claims/clm_%00x",
                                 "/v1/receipts/rcp_%00", "/v1/claims?cursor=Y2xtXwA"])
async def test_nul_characters_are_refused_not_passed_to_the_database(client, pharmacy, url):
    response = await client.get(url, headers=pharmacy)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_nul_in_the_console_login_form_is_a_plain_refusal(client, settings, app):
    person = make_person(settings)
    for email, password in (("nobody\x00@test.invalid", "secret\x00"),
                            (person.email + "\x00", person.password),
                            (person.email, person.password + "\x00"),
                            (person.email, "\x00" + person.password)):
        response = await post_password(client, email, password)
        assert response.status_code == 401, (email, password, response.text)
        assert "Identifiant ou mot de passe incorrect." in response.text
        assert "gw_console" not in response.headers.get("set-cookie", "")
