"""/docs from the gateway itself (no CDN, strict CSP), off by default outside development."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager

from gateway.main import create_app
from gateway.settings import Settings

pytestmark = pytest.mark.anyio
KEYS = ("data_key", "index_key", "signing_key", "audit_key", "credential_key",
        "audit_head_key")
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.S)
URLS = re.compile(r'(?:src|href)="([^"]*)"')


def production(settings: Settings, **update: object) -> Settings:
    keys = {name: base64.b64encode(os.urandom(32)).decode() for name in KEYS}
    return Settings(**{**settings.model_dump(exclude={"security"}), "environment": "production",
                       "security": keys, **update})


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, configure_logs=False, run_workers=False)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as http:
            yield http


async def test_docs_load_only_same_origin_files_under_the_strict_policy(client):
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    scripts = SCRIPT.findall(page.text)
    assert scripts and all('src="/' in attrs and not body.strip() for attrs, body in scripts)
    assert "cdn" not in page.text.lower() and "://" not in page.text
    urls = [url for url in URLS.findall(page.text)
            if url != "/openapi.json" and not url.startswith("data:")]  # the empty favicon
    assert len(urls) == 3 and all(url.startswith("/") and not url.startswith("//")
                                  for url in urls)
    for url in urls:
        asset = await client.get(url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
        assert asset.headers["x-content-type-options"] == "nosniff"
    assert "SwaggerUIBundle" in (await client.get("/static/docs-init.js")).text


async def test_redoc_is_not_served_and_the_openapi_document_is(client):
    assert (await client.get("/redoc")).status_code == 404
    spec = await client.get("/openapi.json")
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.1")


async def test_docs_are_off_by_default_in_production(settings):
    async with gateway(production(settings)) as http:
        assert (await http.get("/docs")).status_code == 404
        assert (await http.get("/docs/assets/swagger-ui-bundle.js")).status_code == 404
        assert (await http.get("/redoc")).status_code == 404
        assert (await http.get("/openapi.json")).status_code == 200


async def test_production_serves_docs_when_asked(settings):
    async with gateway(production(settings, api_docs=True)) as http:
        page = await http.get("/docs")
        assert page.status_code == 200 and "content-security-policy" in page.headers
        assert (await http.get("/docs/assets/swagger-ui.css")).status_code == 200
        assert (await http.get("/redoc")).status_code == 404


async def test_development_can_turn_docs_off(settings):
    async with gateway(settings.model_copy(update={"api_docs": False})) as http:
        assert (await http.get("/docs")).status_code == 404
