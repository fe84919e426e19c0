"""`gateway queue export | export-again | batches | import-acks | release`, in process:
the whole hand-over from the shell, with the simulator answering the batch."""

from __future__ import annotations

from pathlib import Path

import anyio.to_thread
import pytest
from handover_support import acknowledge, give_keys, handover_config
from operator_settings import operator_config
from synthetic import claim_body
from typer.testing import CliRunner

from gateway.cli.queue import queue_app
from gateway.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        environment="development", database_url=database_url, data_dir=tmp_path / "data",
        operators=[operator_config("opera", ["80*"], **handover_config())])


def inline(table: dict[str, str]) -> str:
    return "{" + ", ".join(f'{name} = "{value}"' for name, value in table.items()) + "}"


def write_config(tmp_path: Path, settings: Settings) -> str:
    operator = settings.operators[0]
    lines = ['environment = "development"', f'database_url = "{settings.database_url}"',
             f'data_dir = "{settings.data_dir}"', "[[operators]]", 'name = "opera"',
             'adapter = "reference"', f'base_url = "{operator.base_url}"', 'insurers = ["80*"]',
             f"handover_encryption_key = {inline(operator.handover_encryption_key)}",
             f"handover_ack_key = {inline(operator.handover_ack_key)}"]
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def last_line(output: str) -> str:
    """What the command printed last (structlog's lines may come before, in tests)."""
    return output.strip().splitlines()[-1]


async def cli(*args: str):
    return await anyio.to_thread.run_sync(lambda: CliRunner().invoke(queue_app, list(args)))


async def test_the_whole_hand_over_from_the_shell(app, client, pharmacy, settings, simulators,
                                                  tmp_path):
    config = write_config(tmp_path, settings)
    assert (await cli("pause", "opera", "--config", config)).exit_code == 0
    ids = []
    for invoice in ("SH1", "SH2", "SH3"):
        response = await client.post("/v1/claims", json=claim_body(invoice), headers=pharmacy)
        ids.append(response.json()["id"])
    batch_file = tmp_path / "out" / "opera.jwe"
    batch_file.parent.mkdir()
    exported = await cli("export", "opera", "--to", str(batch_file), "--max", "2",
                         "--config", config)
    assert exported.exit_code == 0, exported.output
    batch_id = exported.output.split("batch ")[1].split()[0]
    assert last_line(exported.output).startswith("exported 2 claim(s)")
    assert batch_file.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in batch_file.parent.iterdir()] == ["opera.jwe"]  # no leftover
    again = await cli("export", "opera", "--to", str(batch_file), "--config", config)
    assert again.exit_code == 1 and "exists already" in again.output
    copy = tmp_path / "copy.jwe"
    rewritten = await cli("export-again", "opera", batch_id, "--to", str(copy), "--config",
                          config)
    assert rewritten.exit_code == 0, rewritten.output
    give_keys(simulators["opera"], app)
    answer = await acknowledge(simulators["opera"], batch_file.read_text())
    assert answer.status_code == 200, answer.text
    acks = tmp_path / "acks.jws"
    acks.write_text(answer.text)
    bad = tmp_path / "bad.jws"
    bad.write_text(answer.text.replace(".", ".x", 1))
    refused = await cli("import-acks", "opera", str(bad), "--config", config)
    assert refused.exit_code == 1 and "nothing was changed" in refused.output
    imported = await cli("import-acks", "opera", str(acks), "--config", config)
    assert imported.exit_code == 0, imported.output
    assert last_line(imported.output) == (f"batch {batch_id}: 2 accepted, 0 rejected, "
                                       "0 still awaiting acknowledgement")
    listed = await cli("batches", "opera", "--config", config)
    assert listed.output.startswith(f"{batch_id}\tacknowledged\tclaims=2\tsettled=2")
    second = tmp_path / "second.jwe"
    assert (await cli("export", "opera", "--to", str(second), "--config", config)).exit_code == 0
    board = await cli("list", "--config", config)
    assert "queued=0" in board.output and "exported=1" in board.output
    last = (await cli("batches", "opera", "--config", config)).output.split()[0]
    released = await cli("release", "opera", last, "--config", config)
    assert last_line(released.output) == f"released 1 claim(s) of batch {last} back to the queue"
    statuses = [(await client.get(f"/v1/claims/{i}", headers=pharmacy)).json()["status"]
                for i in ids]
    assert statuses == ["accepted", "accepted", "queued"]
