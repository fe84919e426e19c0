"""The operator entries the tests configure, with short timeouts so faults show fast.

A module of its own because `conftest` is ambiguous across test folders: test
modules import this, never `conftest`.
"""

from __future__ import annotations

from typing import Any


def operator_config(name: str, insurers: list[str], **overrides: Any) -> dict[str, Any]:
    config = {"name": name, "adapter": "reference", "base_url": f"http://{name}.test",
              "insurers": insurers, "timeout_s": 0.5, "deadline_s": 1.0}
    config.update(overrides)
    return config
