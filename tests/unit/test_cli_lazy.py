"""The command line imports a command's module only when that command runs (or the help
lists it): `gateway simulator` and `gateway keys create` must not load the whole gateway."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from gateway.cli.main import LAZY_COMMANDS, app


def test_starting_the_command_line_imports_no_command_module() -> None:
    probe = ("import sys, gateway.cli.main; "
             "print(sorted(m for m in ('gateway.context', 'gateway.storage.models', "
             "'gateway.cli.keys', 'gateway.cli.queue', 'fastapi') if m in sys.modules))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,  # noqa: S603
                           check=True, timeout=60).stdout.strip()
    assert found == "[]"


def test_every_lazy_command_is_listed_and_runs_its_help() -> None:
    runner = CliRunner()
    listing = runner.invoke(app, ["--help"])
    assert listing.exit_code == 0
    for name in LAZY_COMMANDS:
        assert name in listing.output
        shown = runner.invoke(app, [name, "--help"])
        assert shown.exit_code == 0, shown.output
        assert "Usage:" in shown.output
    rotate = runner.invoke(app, ["keys", "rotate-data-key", "--help"])
    assert rotate.exit_code == 0 and "--reencrypt" in rotate.output
