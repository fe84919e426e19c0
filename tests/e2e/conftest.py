"""Fixtures of the end-to-end suite: real `gateway` processes, each in its own tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from procs import dev_config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A valid development config file `gw.toml` in tmp_path."""
    path = tmp_path / "gw.toml"
    path.write_text(dev_config())
    return path
