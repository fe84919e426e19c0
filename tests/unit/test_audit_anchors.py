"""Signed heads exported outside the database as they are made, and checked from there:
a tail cut together with every `audit_heads` row still contradicts the anchor file."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text
from typer.testing import CliRunner

from gateway.audit.anchors import Anchors, HttpSink
from gateway.audit.heads import HeadSigner, run_audit_heads
from gateway.audit.trail import AuditLog
from gateway.cli.audit import audit_app
from gateway.security.apikeys import Principal
from gateway.settings import Settings, load_settings
from gateway.storage.db import Database
from gateway.storage.unit import UnitOfWork

ACTOR = Principal(key_id="key_0123456789abcdef", role="operations", finess=None, operators=None)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           migrated_sqlite) -> Path:  # type: ignore[no-untyped-def]
    for name in [n for n in os.environ if n.startswith("GATEWAY_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "gateway.toml"
    path.write_text(f'environment = "development"\ndata_dir = "{tmp_path / "var"}"\n'
                    f'database_url = "sqlite:///{tmp_path / "audit.db"}"\n'
                    f'[audit]\nanchor_file = "{tmp_path / "anchors" / "heads.jsonl"}"\n')
    migrated_sqlite(load_settings(path).database_url)
    return path


def append(db: Database, log: AuditLog, count: int) -> None:
    """`count` entries in one transaction: the head task, running meanwhile, sees all of
    them or none (one transaction each, a head could fall between two on a loaded
    machine, and the anchors' lines then cover other entries than the tests expect)."""
    def entries(session: UnitOfWork) -> None:
        for index in range(count):
            log.append(session, ACTOR, "operator.pause", object_id=f"op{index}")

    if count:
        db.write_now(entries)


def run_heads(settings: Settings, db: Database, rounds: list[int],
              transport: httpx.AsyncBaseTransport | None = None) -> None:
    """The head task, with `rounds[i]` entries appended before its i-th period."""
    log = AuditLog.from_settings(settings)

    async def scenario() -> None:
        stopping = asyncio.Event()
        ctx = SimpleNamespace(settings=settings, db=Database(settings.database_url))
        task = asyncio.create_task(run_audit_heads(ctx, stopping, interval_s=0.05,
                                                   transport=transport))
        for count in rounds:
            await asyncio.to_thread(append, db, log, count)
            await asyncio.sleep(0.15)
        stopping.set()
        await task
        await ctx.db.dispose()

    asyncio.run(scenario())


def verify(config: Path, *extra: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(audit_app, ["verify", "--config", str(config), *extra])


@pytest.fixture
def trail(config: Path):  # type: ignore[no-untyped-def]
    settings = load_settings(config)
    db = Database(settings.database_url)
    yield settings, db, Path(settings.audit.anchor_file)
    db.engine.dispose()


def test_the_file_sink_appends_a_line_per_head_as_it_is_made(trail) -> None:  # type: ignore[no-untyped-def]
    settings, db, anchors = trail
    run_heads(settings, db, [3, 0, 2])
    records = [json.loads(line) for line in anchors.read_text().splitlines()]
    assert [(r["head_id"], r["entry_id"]) for r in records] == [(1, 3), (2, 5)]
    assert oct(anchors.stat().st_mode & 0o777) == "0o640"
    kid = HeadSigner.from_settings(settings).kid
    assert {r["kid"] for r in records} == {kid}
    assert len({r["deployment"] for r in records}) == 1
    run_heads(settings, db, [1])  # a restart: appended, never rewritten
    assert [json.loads(line)["entry_id"] for line in anchors.read_text().splitlines()] == [
        3, 5, 6]


def test_a_truncated_tail_without_its_heads_is_caught_by_the_anchors(config, trail) -> None:  # type: ignore[no-untyped-def]
    settings, db, anchors = trail
    run_heads(settings, db, [3, 2])
    assert verify(config, "--anchor", str(anchors)).exit_code == 0
    db.write_now(lambda s: s.execute(text("DELETE FROM audit_log WHERE id >= 4")))
    db.write_now(lambda s: s.execute(text("DELETE FROM audit_heads")))

    inside = verify(config)
    assert inside.exit_code == 0, inside.output  # the database alone cannot tell
    assert "intact: 3 entries" in inside.stdout

    outside = verify(config, "--anchor", str(anchors))
    assert outside.exit_code == 1
    assert outside.stderr.startswith("error: audit entry 5: missing: truncated tail: the chain "
                                     "ends at entry 3, but the anchored head at line 2")
    assert "(3 entries verified before it)" in outside.stderr


def test_a_forged_anchor_line_is_reported(config, trail) -> None:  # type: ignore[no-untyped-def]
    settings, db, anchors = trail
    run_heads(settings, db, [2])
    genuine = json.loads(anchors.read_text().splitlines()[0])
    other_key = Ed25519PrivateKey.generate()
    forged = [
        {**genuine, "entry_id": 1},  # moved: the signature no longer matches
        {**genuine, "signature": base64.urlsafe_b64encode(
            other_key.sign(b"anything")).decode().rstrip("=")},
    ]
    with anchors.open("a") as handle:
        handle.writelines(json.dumps(record) + "\n" for record in forged)
        handle.write("not json\n")
    result = verify(config, "--anchor", str(anchors))
    assert result.exit_code == 1
    assert "anchor line 2: forged: invalid signature" in result.stderr
    assert "anchor line 3: forged: invalid signature" in result.stderr
    assert "anchor line 4: not an anchor record" in result.stderr


def test_anchors_of_another_deployment_are_ignored(config, trail) -> None:  # type: ignore[no-untyped-def]
    settings, db, anchors = trail
    run_heads(settings, db, [2])
    db.write_now(lambda s: s.execute(text("DELETE FROM audit_heads")))
    db.write_now(lambda s: s.execute(text("UPDATE deployment SET id = 'dep_elsewhere'")))
    run_heads(settings, db, [1])  # the same file, now written for another deployment id
    result = verify(config, "--anchor", str(anchors))
    assert result.exit_code == 0, result.output
    assert "1 anchored head(s) hold (1 of other deployments ignored)" in result.stdout


def test_the_https_sink_posts_each_head_and_retries(trail) -> None:  # type: ignore[no-untyped-def]
    settings, db, _ = trail
    received: list[dict[str, object]] = []
    answers = iter([503, 200, 200])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers, 200)
        if status == 200:
            received.append(json.loads(request.content))
        return httpx.Response(status)

    posting = settings.model_copy(update={"audit": settings.audit.model_copy(
        update={"anchor_url": "https://anchors.example/heads"})})
    run_heads(posting, db, [2, 1], transport=httpx.MockTransport(handler))
    assert [(r["head_id"], r["entry_id"]) for r in received] == [(1, 2), (2, 3)]


def test_a_head_a_sink_refused_is_sent_with_the_next(trail) -> None:  # type: ignore[no-untyped-def]
    settings, db, _ = trail
    refusing = [True]
    received: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if refusing[0]:
            return httpx.Response(503)
        received.append(json.loads(request.content)["head_id"])
        return httpx.Response(204)

    sink = HttpSink("https://anchors.example/heads", timeout_s=1,
                    transport=httpx.MockTransport(handler), backoff_s=0)
    anchors = Anchors([sink], {0: []})
    signer = HeadSigner.from_settings(settings)
    log = AuditLog.from_settings(settings)

    async def scenario() -> None:
        append(db, log, 1)
        await anchors.publish(db.write_now(signer.sign), signer.deployment)
        refusing[0] = False
        append(db, log, 1)
        await anchors.publish(db.write_now(signer.sign), signer.deployment)
        await anchors.aclose()

    asyncio.run(scenario())
    assert received == [1, 2]


def test_the_public_key_command_prints_the_head_key(config: Path) -> None:
    result = CliRunner().invoke(audit_app, ["public-key", "--config", str(config)])
    assert result.exit_code == 0, result.output
    jwk = json.loads(result.stdout)
    assert jwk["kid"] == HeadSigner.from_settings(load_settings(config)).kid
    assert jwk["crv"] == "Ed25519" and "d" not in jwk
