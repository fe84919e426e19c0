"""`gateway keys ...` and bad usage, as an operator types them (CONTRACT.md section 1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from procs import clean_env, gateway, write_config

pytestmark = pytest.mark.slow

KEY_LINE = re.compile(r"^key_id: (key_[0-9a-f]{16})$")


def create_pharmacy_key(cwd: Path, config: Path, label: str = "x") -> tuple[str, str]:
    done = gateway("keys", "create", "--config", str(config), "--role", "pharmacy",
                   "--finess", "330001231", "--label", label, cwd=cwd)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    match = KEY_LINE.match(lines[0])
    assert match, lines[0]
    key_id, secret = match.group(1), lines[-1]
    assert secret.startswith(key_id + ".") and len(secret) > len(key_id) + 40
    return key_id, secret


def key_row(cwd: Path, config: Path, key_id: str) -> list[str]:
    done = gateway("keys", "list", "--config", str(config), cwd=cwd)
    assert done.returncode == 0, done.stderr
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    mine = [row for row in rows if row[0] == key_id]
    assert len(mine) == 1, done.stdout
    return mine[0]


def test_create_list_revoke_on_a_new_database(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    assert not (tmp_path / "var").exists()
    key_id, secret = create_pharmacy_key(tmp_path, config)
    assert (tmp_path / "var" / "gateway.db").is_file()  # migrations ran first

    row = key_row(tmp_path, config, key_id)
    assert row[1:4] == ["pharmacy", "330001231", "x"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row[4]), row
    assert row[5] == "-"
    assert secret not in gateway("keys", "list", "--config", str(config), cwd=tmp_path).stdout

    done = gateway("keys", "revoke", "--config", str(config), key_id, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    revoked = key_row(tmp_path, config, key_id)
    assert revoked[5] != "-" and revoked[5] >= revoked[4], revoked


def test_revoke_unknown_key_fails(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = gateway("keys", "revoke", "--config", str(config), "key_0000000000000000",
                   cwd=tmp_path)
    assert done.returncode == 1
    assert "key_0000000000000000" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--role", "pharmacy"], "--finess"),
        (["--role", "superuser", "--label", "x"], "role"),
        (["--role", "pharmacy", "--finess", "33000123"], "finess"),
    ],
    ids=["pharmacy-without-finess", "bad-role", "bad-finess"],
)
def test_create_refuses_bad_requests(tmp_path: Path, args: list[str],
                                     reason: str) -> None:
    config = write_config(tmp_path)
    done = gateway("keys", "create", "--config", str(config), *args, cwd=tmp_path)
    assert done.returncode == 1
    assert reason in done.stderr
    assert "key_id" not in done.stdout
    listed = gateway("keys", "list", "--config", str(config), cwd=tmp_path)
    assert listed.returncode == 0 and listed.stdout == ""


def test_config_from_gateway_config_env(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('environment = "development"\ndatabase_url = "sqlite:///db/env.db"\n')
    env = clean_env(GATEWAY_CONFIG=str(path))
    done = gateway("keys", "create", "--role", "admin", "--label", "via-env", cwd=tmp_path,
                   env=env)
    assert done.returncode == 0, done.stderr
    key_id = KEY_LINE.match(done.stdout.splitlines()[0]).group(1)
    assert (tmp_path / "db" / "env.db").is_file()
    assert not (tmp_path / "var" / "gateway.db").exists()
    listed = gateway("keys", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0
    assert listed.stdout.split("\t")[:4] == [key_id, "admin", "-", "via-env"]


def test_simulator_without_port_is_bad_usage(tmp_path: Path) -> None:
    done = gateway("simulator", cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    assert "--port" in done.stderr


def test_unknown_verb_is_bad_usage(tmp_path: Path) -> None:
    done = gateway("frobnicate", cwd=tmp_path, timeout=30)
    assert done.returncode == 2
    assert "frobnicate" in done.stderr
