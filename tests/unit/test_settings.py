"""Configuration: TOML, env overrides, errors naming the key, keys per environment."""

from __future__ import annotations

import base64
import os

import pytest

from gateway.security.keyring import load_keyring
from gateway.settings import ConfigError, load_settings

OPERATOR = """
[[operators]]
name = "opera"
adapter = "reference"
base_url = "http://127.0.0.1:9101"
insurers = ["80*"]
"""


def write(tmp_path, text):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_defaults_of_the_contract(tmp_path):
    settings = load_settings(write(tmp_path, OPERATOR))
    operator = settings.operators[0]
    assert (operator.provisional, operator.timeout_s, operator.deadline_s) == ("card", 2.0, 3.0)
    assert operator.breaker_fail_max == 5
    assert (operator.breaker_reset_s, operator.drain_per_s) == (15, 20)
    assert settings.provisional.max_amc_cents_per_claim == 30000
    assert settings.limits.rights_per_minute == 120
    assert settings.database_url == "sqlite:///var/gateway.db"


def test_env_overrides_the_file_key_by_key(tmp_path, monkeypatch):
    path = write(tmp_path, 'public_url = "http://file"\n[security]\ndata_key = "from-file"\n'
                 + OPERATOR)
    monkeypatch.setenv("GATEWAY_PUBLIC_URL", "http://env")
    monkeypatch.setenv("GATEWAY_LIMITS__RIGHTS_PER_MINUTE", "7")
    monkeypatch.setenv("GATEWAY_SECURITY__SIGNING_KEY", "from-env")
    monkeypatch.setenv("GATEWAY_NOT_A_KEY", "ignored")
    settings = load_settings(path)
    assert settings.public_url == "http://env"
    assert settings.limits.rights_per_minute == 7
    assert settings.security.signing_key.get_secret_value() == "from-env"
    assert settings.security.data_key.get_secret_value() == "from-file"


def test_unknown_env_is_ignored_and_operators_are_reachable_by_index(tmp_path, monkeypatch):
    path = write(tmp_path, OPERATOR)
    monkeypatch.setenv("GATEWAY_SECURITY__NOPE", "x")
    monkeypatch.setenv("GATEWAY_OPERATORS__0__NOPE", "x")
    monkeypatch.setenv("GATEWAY_OPERATORS__7__DEADLINE_S", "9")
    monkeypatch.setenv("GATEWAY_OPERATORS__0__DEADLINE_S", "1.5")
    monkeypatch.setenv("GATEWAY_OPERATORS__0__INSURERS", '["80*", "123456789"]')
    settings = load_settings(path)
    assert settings.operators[0].deadline_s == 1.5
    assert settings.operators[0].insurers == ["80*", "123456789"]
    assert len(settings.operators) == 1


def test_a_bad_env_value_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_LIMITS__RIGHTS_PER_MINUTE", "many")
    with pytest.raises(ConfigError, match="limits.rights_per_minute"):
        load_settings(write(tmp_path, OPERATOR))


def test_gateway_config_env_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_CONFIG", str(write(tmp_path, 'public_url = "http://x"\n')))
    assert load_settings().public_url == "http://x"


@pytest.mark.parametrize(("text", "named"), [
    ('databse_url = "x"\n', "databse_url"),
    ('[security]\ndata_kee = "x"\n', "security.data_kee"),
    (OPERATOR.replace('base_url = "http://127.0.0.1:9101"\n', ""), "operators[0].base_url"),
    (OPERATOR.replace('name = "opera"', 'name = "Opera!"'), "operators[0].name"),
    (OPERATOR + OPERATOR.replace('"80*"', '"90*"'), "operators[1].name"),
    (OPERATOR + OPERATOR.replace('"opera"', '"other"'), "operators[1].insurers"),
    (OPERATOR.replace('"80*"', '"8*0"'), "operators[0]"),
    (OPERATOR.replace('adapter = "reference"', "timeout_s = -1\nadapter = \"reference\""),
     "operators[0].timeout_s"),
    ("database_url = \n", "not valid TOML"),
])
def test_bad_files_name_the_key(tmp_path, text, named):
    with pytest.raises(ConfigError) as error:
        load_settings(write(tmp_path, text))
    assert named in str(error.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "absent.toml")


def test_development_generates_keys_once_under_data_dir(tmp_path):
    text = f'environment = "development"\ndata_dir = "{tmp_path}"\n'
    settings = load_settings(write(tmp_path, text))
    first = load_keyring(settings)
    again = load_keyring(settings)
    assert first == again
    assert len(first.data_key) == 32 and first.data_key != first.index_key
    assert oct(os.stat(tmp_path / "data_key.b64").st_mode & 0o777) == "0o600"


def test_production_requires_every_key(tmp_path):
    settings = load_settings(write(tmp_path, f'data_dir = "{tmp_path}"\n'))
    with pytest.raises(ConfigError, match="security.data_key"):
        load_keyring(settings)
    assert not (tmp_path / "data_key.b64").exists()


def test_production_requires_the_credential_key(tmp_path):
    from gateway.security.keyring import load_credential_key

    settings = load_settings(write(tmp_path, f'data_dir = "{tmp_path}"\n'))
    with pytest.raises(ConfigError, match="security.credential_key"):
        load_credential_key(settings)
    assert not (tmp_path / "credential_key.b64").exists()


def test_production_requires_the_audit_head_key_and_with_redis_the_redis_key(tmp_path):
    from gateway.security.keyring import load_audit_head_key, load_redis_key

    settings = load_settings(write(tmp_path, f'data_dir = "{tmp_path}"\n'))
    with pytest.raises(ConfigError, match="security.audit_head_key: required outside"):
        load_audit_head_key(settings)
    assert load_redis_key(settings) is None  # no Redis, no key needed
    with_redis = settings.model_copy(update={"redis_url": "redis://127.0.0.1:6379/0"})
    with pytest.raises(ConfigError, match="security.redis_key: required outside"):
        load_redis_key(with_redis)
    assert not list(tmp_path.glob("*.b64"))
    dev = with_redis.model_copy(update={"environment": "development"})
    assert load_redis_key(dev) == load_redis_key(dev)
    assert oct(os.stat(tmp_path / "redis_key.b64").st_mode & 0o777) == "0o600"


def test_the_audit_section_is_read_from_the_file_and_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_AUDIT__ANCHOR_URL", "https://anchors.example/heads")
    settings = load_settings(write(tmp_path, '[audit]\nanchor_file = "/var/lib/a.jsonl"\n'))
    assert settings.audit.anchor_file == "/var/lib/a.jsonl"
    assert settings.audit.anchor_url == "https://anchors.example/heads"
    monkeypatch.delenv("GATEWAY_AUDIT__ANCHOR_URL")
    with pytest.raises(ConfigError, match="audit.anchor_url"):
        load_settings(write(tmp_path, '[audit]\nanchor_url = "file:///etc/passwd"\n'))


def test_keys_accept_standard_and_urlsafe_base64_padded_or_not(tmp_path):
    raws = [bytes(range(250, 256)) + bytes([n]) * 26 for n in (1, 2, 3)]  # + and / inside
    keys = {
        "data_key": base64.b64encode(raws[0]).decode(),
        "index_key": base64.urlsafe_b64encode(raws[1]).decode().rstrip("="),
        "signing_key": base64.b64encode(raws[2]).decode().rstrip("="),
    }
    body = "[security]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    ring = load_keyring(load_settings(write(tmp_path, body)))
    assert [ring.data_key, ring.index_key, ring.signing_key] == raws


def test_the_same_key_under_two_names_is_refused(tmp_path):
    raw = bytes(range(250, 256)) + bytes(26)
    body = ("[security]\n"
            f'data_key = "{base64.b64encode(raw).decode()}"\n'
            f'index_key = "{base64.urlsafe_b64encode(raw).decode().rstrip("=")}"\n')
    with pytest.raises(ConfigError, match="index_key is the same key as data_key"):
        load_settings(write(tmp_path, body))


def test_a_short_key_is_refused(tmp_path):
    body = '[security]\ndata_key = "c2hvcnQ="\nindex_key = "x"\nsigning_key = "x"\n'
    with pytest.raises(ConfigError, match="security.data_key: must decode to 32 bytes"):
        load_keyring(load_settings(write(tmp_path, body)))
