"""Write docs/openapi.json: the gateway's OpenAPI document, as `/openapi.json` serves it.

    .venv/bin/python scripts/export_openapi.py           # rewrite docs/openapi.json
    .venv/bin/python scripts/export_openapi.py --check   # exit 1 if it is out of date

The document is kept in the repository so that a change to the API shows in review as
a diff of this file. It is built from a development configuration in a temporary
directory (keys generated there, no database touched), and written deterministically:
keys sorted, indented by 2, a final newline. tests/integration/test_openapi_document.py
fails when the served document and the file differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.main import create_app
from gateway.settings import Settings

DOCUMENT = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def openapi_text(document: dict[str, Any]) -> str:
    """The one way the document is written, so that two exports of one API are equal."""
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def build_document() -> dict[str, Any]:
    """`create_app(settings).openapi()` for a throwaway development configuration."""
    with tempfile.TemporaryDirectory(prefix="openapi-") as scratch:
        settings = Settings(environment="development", api_docs=True,
                            database_url=f"sqlite:///{scratch}/unused.db",
                            data_dir=Path(scratch) / "data")
        app = create_app(settings, configure_logs=False, run_workers=False)
        return app.openapi()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with docs/openapi.json instead of writing it")
    args = parser.parse_args(argv)
    text = openapi_text(build_document())
    if args.check:
        current = DOCUMENT.read_text(encoding="utf-8") if DOCUMENT.exists() else ""
        if current != text:
            print(f"{DOCUMENT} is out of date: run scripts/export_openapi.py", file=sys.stderr)
            return 1
        print(f"{DOCUMENT} is up to date")
        return 0
    DOCUMENT.write_text(text, encoding="utf-8")
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
