"""`gateway queue ...` against the gateway's own database: the operations verbs of the
API, from the shell, audited under the shell user's name."""

from __future__ import annotations

import json

import anyio.to_thread
from sqlmodel import col, select
from synthetic import claim_body
from typer.testing import CliRunner

from gateway.cli.queue import queue_app
from gateway.storage.db import Database
from gateway.storage.models import AuditEntry


def write_config(tmp_path, settings) -> str:
    lines = ['environment = "development"', f'database_url = "{settings.database_url}"',
             f'data_dir = "{settings.data_dir}"']
    for operator in settings.operators:
        lines += ["[[operators]]", f'name = "{operator.name}"', 'adapter = "reference"',
                  f'base_url = "{operator.base_url}"',
                  f"insurers = {json.dumps(list(operator.insurers))}"]
    path = tmp_path / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def cli(*args: str):
    """The command in a thread: it runs its own event loop, as from a shell."""
    return await anyio.to_thread.run_sync(lambda: CliRunner().invoke(queue_app, list(args)))


def cli_entries(settings) -> list[tuple[str, str | None, str]]:
    database = Database(settings.database_url)
    try:
        return database.read_now(lambda s: [
            (e.action, e.object_id, e.outcome) for e in s.exec(
                select(AuditEntry).where(col(AuditEntry.actor).startswith("cli:"),
                                         col(AuditEntry.action).startswith("operator."))
                .order_by(col(AuditEntry.id))).all()])
    finally:
        database.engine.dispose()


async def test_pause_list_replay_and_resume_from_the_shell(
        app, client, pharmacy, settings, tmp_path):
    config = write_config(tmp_path, settings)

    paused = await cli("pause", "opera", "--reason", "maintenance", "--config", config)
    assert paused.exit_code == 0, paused.output
    assert paused.output.strip() == "paused opera"
    # the running gateway reads the pause from the database: the claim is queued at once
    answer = await client.post("/v1/claims", json=claim_body("Q1"), headers=pharmacy)
    assert answer.status_code == 202, answer.text
    claim_id = answer.json()["id"]

    board = await cli("list", "--config", config)
    assert board.exit_code == 0, board.output
    opera = next(line for line in board.output.splitlines() if line.startswith("opera\t"))
    assert "paused=yes" in opera and "queued=1" in opera
    listed = await cli("list", "opera", "--config", config)
    assert listed.output.startswith(f"{claim_id}\tQ1\tqueued\t")

    counted = await cli("replay", "opera", "--status", "queued", "--dry-run", "--config", config)
    assert counted.exit_code == 0, counted.output
    assert counted.output.strip() == "would requeue 1 claim(s)"
    replayed = await cli("replay", "opera", "--status", "queued", "--config", config)
    assert replayed.output.startswith("requeued 1 claim(s) (replay rpl_")

    resumed = await cli("resume", "opera", "--config", config)
    assert resumed.output.strip() == "resumed opera"
    board = await cli("list", "--config", config)
    assert "paused=no" in next(line for line in board.output.splitlines()
                               if line.startswith("opera\t"))
    assert cli_entries(settings) == [
        ("operator.pause", "opera", "ok"), ("operator.replay", "opera", "dry_run"),
        ("operator.replay", "opera", "ok"), ("operator.resume", "opera", "ok")]


async def test_a_refused_verb_fails_with_its_reason_and_writes_nothing(
        app, settings, tmp_path):
    config = write_config(tmp_path, settings)
    unknown = await cli("pause", "nobody", "--config", config)
    assert unknown.exit_code == 1
    assert "no operator 'nobody'" in unknown.output
    unsaid = await cli("replay", "opera", "--config", config)  # neither status nor ids
    assert unsaid.exit_code == 1
    assert "say which claims to replay" in unsaid.output
    assert cli_entries(settings) == []
