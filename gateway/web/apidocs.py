"""`/docs` served by the gateway itself: Swagger UI from a pip package, no CDN, strict CSP.

FastAPI's own /docs and /redoc load their scripts from a CDN and start them with an inline
script, which the gateway's Content-Security-Policy refuses. This page is ours: it loads
the Swagger UI files shipped by `fastapi-offline` and `static/docs-init.js`, all from this
origin, under the same headers as every other answer. /redoc is not served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from html import escape
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse

from gateway.settings import Settings

ASSETS_URL = "/docs/assets"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="icon" href="data:,">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<noscript>Swagger UI needs JavaScript; the API is described in <a
href="{openapi_url}">{openapi_url}</a>.</noscript>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="/static/docs-init.js"></script>
</body>
</html>
"""


def swagger_ui_dir() -> Path:
    """Swagger UI 5 (OpenAPI 3.1, which FastAPI emits), as `fastapi-offline` ships it."""
    return Path(str(files("fastapi_offline") / "static"))


def asset(path: Path, media_type: str) -> Callable[[], Awaitable[FileResponse]]:
    async def serve() -> FileResponse:
        return FileResponse(path, media_type=media_type)

    return serve


def install_api_docs(app: FastAPI, settings: Settings) -> None:
    """Serve /docs only when `api_docs` allows it (by default in development only)."""
    if not settings.serves_api_docs:
        return
    page = PAGE.format(title=escape(f"{app.title} - API"), assets=ASSETS_URL,
                       openapi_url=escape(app.openapi_url or "/openapi.json"))
    directory = swagger_ui_dir()
    for name, media_type in ASSETS.items():
        app.add_api_route(f"{ASSETS_URL}/{name}", asset(directory / name, media_type),
                          methods=["GET"], include_in_schema=False, name=f"docs:{name}")

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(page)
