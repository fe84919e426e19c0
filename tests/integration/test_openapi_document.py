"""docs/openapi.json is the document the gateway serves: an API change shows in review as
a diff of that file, made by scripts/export_openapi.py."""

from __future__ import annotations

import difflib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from gateway.settings import Settings

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "openapi.json"
SCRIPT = ROOT / "scripts" / "export_openapi.py"
FIX = ("run `.venv/bin/python scripts/export_openapi.py`, then review the diff of "
       "docs/openapi.json: it is the API change your code makes")


def export_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("export_openapi", SCRIPT)
    assert spec is not None and spec.loader is not None, f"{SCRIPT} is missing"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_docs": True})


def first_differences(expected: str, actual: str, lines: int = 40) -> str:
    diff = difflib.unified_diff(expected.splitlines(), actual.splitlines(),
                                "docs/openapi.json", "served /openapi.json", lineterm="", n=2)
    return "\n".join(list(diff)[:lines])


async def test_the_served_document_is_the_checked_in_one(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    canonical = export_script().openapi_text(response.json())
    checked_in = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.exists() else ""
    assert checked_in == canonical, (
        f"docs/openapi.json differs from the served /openapi.json: {FIX}\n"
        + first_differences(checked_in, canonical))


def test_the_script_writes_what_it_checks(tmp_path, monkeypatch, capsys):
    """The script builds the same document the app serves, and --check tells stale from
    current without writing."""
    script = export_script()
    target = tmp_path / "openapi.json"
    monkeypatch.setattr(script, "DOCUMENT", target)
    assert script.main(["--check"]) == 1 and not target.exists()
    assert script.main([]) == 0
    written = target.read_text(encoding="utf-8")
    assert written.endswith("}\n") and json.loads(written)["openapi"].startswith("3.")
    assert written == script.openapi_text(json.loads(written))  # sorted, indented, stable
    assert script.main(["--check"]) == 0
    assert "out of date" in capsys.readouterr().err
