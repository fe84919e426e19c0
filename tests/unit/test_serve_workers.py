"""`gateway serve --workers N`: refused on SQLite before anything is touched; a worker takes
a signal repeated within a second (the process group's, then the supervisor's) as one.

The workers themselves, with real processes on PostgreSQL: tests/e2e/test_e2e_workers.py.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import uvicorn
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.web.serving import GracefulServer, StopSignal
from gateway.web.workers import REPEATED_SIGNAL_S

CONFIG = """environment = "development"
database_url = "sqlite:///{db}"
data_dir = "{data}"

[[operators]]
name = "opera"
adapter = "reference"
base_url = "http://127.0.0.1:9"
insurers = ["80*"]
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(CONFIG.format(db=tmp_path / "gateway.db", data=tmp_path / "var"))
    return path


def test_several_workers_on_sqlite_are_refused_before_the_database_is_touched(
    tmp_path: Path,
) -> None:
    result = CliRunner().invoke(app, ["serve", "--config", str(_config(tmp_path)),
                                      "--workers", "2"])
    assert result.exit_code == 1, result.output
    assert "error: --workers 2 needs PostgreSQL" in result.output
    assert "--workers 1" in result.output  # what to do instead
    assert not (tmp_path / "gateway.db").exists()  # not migrated, not created
    assert not (tmp_path / "var").exists()  # no development key generated either


def test_zero_workers_is_bad_usage(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--config", str(_config(tmp_path)),
                                      "--workers", "0"])
    assert result.exit_code == 2


def _server(delay_s: float, repeat_s: float) -> tuple[GracefulServer, StopSignal]:
    stop = StopSignal()
    return GracefulServer(uvicorn.Config(lambda *a: None), stop, delay_s, repeat_s), stop


def test_a_worker_takes_a_signal_repeated_at_once_as_the_same_stop() -> None:
    server, stop = _server(delay_s=60, repeat_s=REPEATED_SIGNAL_S)
    server.handle_exit(signal.SIGTERM, None)  # from the process group
    server.handle_exit(signal.SIGTERM, None)  # relayed by the supervisor
    assert stop.is_set and not server.should_exit  # still pausing: 503 while listening
    server.handle_exit(signal.SIGINT, None)  # Ctrl-C: the group's SIGINT, the relay's TERM
    assert not server.should_exit


def test_a_later_second_signal_still_cuts_the_pause_short() -> None:
    server, stop = _server(delay_s=60, repeat_s=0.05)
    server.handle_exit(signal.SIGTERM, None)
    time.sleep(0.1)
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
    assert not server.force_exit  # uvicorn still finishes the requests and the lifespan
