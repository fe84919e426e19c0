"""Configuration errors stop the start, naming the key (CONTRACT.md section 2)."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest
from procs import (
    clean_env,
    dev_config,
    free_port,
    gateway,
    operator_toml,
    output,
    spawn,
    wait_http,
    write_config,
)

pytestmark = pytest.mark.slow

OPERA = operator_toml("opera", "http://127.0.0.1:9101", ["80*"])


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (dev_config(databse_url="sqlite:///var/x.db"), "databse_url"),
        (dev_config('[[operators]]\nname = "opera"\nadapter = "reference"\ninsurers = ["80*"]\n'),
         "operators[0].base_url"),
        (dev_config(OPERA + operator_toml("opera", "http://127.0.0.1:9102", ["90*"])),
         "operators[1].name"),
        (dev_config(OPERA + operator_toml("santex", "http://127.0.0.1:9102", ["90*", "80*"])),
         "operators[1].insurers"),
        (dev_config(OPERA + "timeout_s = [\n"), "not valid TOML"),
    ],
    ids=["unknown-key", "missing-base-url", "duplicate-name", "pattern-twice", "bad-toml"],
)
@pytest.mark.parametrize("verb", [["db", "upgrade"], ["serve"]])
def test_bad_config_stops_the_start(tmp_path: Path, text: str, named: str,
                                    verb: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    port = free_port()
    args = [*verb, "--config", str(path)] + (["--port", str(port)] if verb == ["serve"] else [])
    done = gateway(*args, cwd=tmp_path, timeout=30)
    assert done.returncode == 1, done.stdout + done.stderr
    assert named in done.stderr
    assert done.stderr.startswith("error: configuration: ")


def test_db_upgrade_on_a_good_config(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    done = gateway("db", "upgrade", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "database is up to date"
    assert (tmp_path / "var" / "gateway.db").is_file()
    again = gateway("db", "upgrade", "--config", str(config), cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_production_without_data_key_does_not_listen(tmp_path: Path) -> None:
    path = tmp_path / "prod.toml"
    path.write_text(dev_config(OPERA, environment="production"))
    port = free_port()
    done = gateway("serve", "--config", str(path), "--port", str(port), cwd=tmp_path, timeout=30)
    assert done.returncode == 1
    assert "security.data_key" in done.stderr
    with socket.socket() as sock:  # nothing was left listening
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_env_database_url_wins_over_the_file(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    env = clean_env(GATEWAY_DATABASE_URL="sqlite:///from-env/gw.db")
    done = gateway("db", "upgrade", "--config", str(config), cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "from-env" / "gw.db").is_file()
    assert not (tmp_path / "var" / "gateway.db").exists()


@pytest.mark.parametrize(
    "name",
    [
        "GATEWAY_NOT_A_SETTING",
        "GATEWAY_SECURITY__NOPE",
        "GATEWAY_OPERATORS__0__NOPE",
    ],
)
def test_unknown_gateway_env_is_ignored(tmp_path: Path, name: str) -> None:
    config = write_config(tmp_path)
    done = gateway("db", "upgrade", "--config", str(config), cwd=tmp_path,
                   env=clean_env(**{name: "x"}))
    assert done.returncode == 0, done.stderr


def test_short_data_key_stops_serve(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(dev_config(OPERA + '[security]\ndata_key = "c2hvcnQ="\n'))
    done = gateway("serve", "--config", str(path), "--port", str(free_port()), cwd=tmp_path,
                   timeout=30)
    assert done.returncode == 1
    assert "security.data_key: must decode to 32 bytes, got 5" in done.stderr


def test_production_with_keys_from_env_serves(tmp_path: Path) -> None:
    path = tmp_path / "prod.toml"
    path.write_text(dev_config(OPERA, environment="production"))
    keys = {f"GATEWAY_SECURITY__{name}": base64.b64encode(bytes([i]) * 32).decode()
            for i, name in enumerate(["DATA_KEY", "INDEX_KEY", "SIGNING_KEY", "AUDIT_KEY",
                                          "CREDENTIAL_KEY", "AUDIT_HEAD_KEY"],
                                     start=1)}
    port = free_port()
    with spawn("serve", "--config", str(path), "--port", str(port), cwd=tmp_path, name="prod",
               env=clean_env(**keys)) as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, tmp_path, "prod")
    assert not (tmp_path / "var" / "data_key.b64").exists()  # no dev key was generated


REPOSITORY = Path(__file__).resolve().parents[2]


def test_the_shipped_config_refuses_to_start_without_keys(tmp_path: Path) -> None:
    config = tmp_path / "shipped.toml"
    config.write_text((REPOSITORY / "config" / "gateway.toml").read_text())
    done = gateway("serve", "--config", str(config), "--port", str(free_port()), cwd=tmp_path,
                   timeout=30)
    assert done.returncode == 1
    assert "security.data_key: required outside development" in done.stderr
    assert not (tmp_path / "var").exists()  # no key generated, no database made


def test_identical_keys_stop_the_start(tmp_path: Path) -> None:
    path = tmp_path / "prod.toml"
    path.write_text(dev_config(OPERA, environment="production"))
    same = base64.b64encode(bytes(range(32))).decode()
    keys = {f"GATEWAY_SECURITY__{name}": base64.b64encode(bytes([i]) * 32).decode()
            for i, name in enumerate(["DATA_KEY", "INDEX_KEY", "SIGNING_KEY", "AUDIT_KEY",
                                      "CREDENTIAL_KEY"], start=1)}
    keys["GATEWAY_SECURITY__INDEX_KEY"] = same
    keys["GATEWAY_SECURITY__AUDIT_KEY"] = same.rstrip("=").replace("+", "-").replace("/", "_")
    done = gateway("serve", "--config", str(path), "--port", str(free_port()), cwd=tmp_path,
                   env=clean_env(**keys), timeout=30)
    assert done.returncode == 1
    assert "audit_key is the same key as index_key" in done.stderr


def test_serve_in_development_says_so_loudly(tmp_path: Path) -> None:
    path = tmp_path / "dev.toml"
    path.write_text(dev_config(OPERA))
    with spawn("serve", "--config", str(path), "--port", str(port := free_port()),
               cwd=tmp_path, name="dev") as proc:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, tmp_path, "dev")
    assert "DEVELOPMENT MODE" in output(tmp_path, "dev")
    database = next(tmp_path.rglob("*.db"))
    assert oct(database.stat().st_mode & 0o777) == "0o600"
