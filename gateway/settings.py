"""Configuration: a TOML file, overridden key by key by `GATEWAY_<SECTION>__<KEY>` env.

Every model forbids unknown keys, so a typo stops the start with the key's name
instead of being silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from adapters.batch_files import MAX_BATCH_CLAIMS
from gateway.domain.identifiers import check_finess
from gateway.handover.keys import ENCRYPTION_ALGS, SIGNATURE_ALGS, check_jwk
from gateway.webhooks.signing import decode_secret

DEFAULT_CONFIG_PATH = Path("config/gateway.toml")
ENV_PREFIX = "GATEWAY_"
INSURER_PATTERN = re.compile(r"^[0-9]{1,12}\*?$")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecuritySettings(_Section):
    data_key: SecretStr = SecretStr("")
    signing_key: SecretStr = SecretStr("")
    index_key: SecretStr = SecretStr("")  # keyed hashes for NIR lookups: never the data key
    audit_key: SecretStr = SecretStr("")  # HMAC sealing each audit entry: never another key
    # the pepper: API key secrets and session tokens are stored as HMAC under it, and each
    # key, user and session row carries a MAC under a key derived from it
    credential_key: SecretStr = SecretStr("")
    previous_data_keys: list[SecretStr] = Field(
        default_factory=list, description="older data keys, still used to decrypt"
    )
    previous_signing_keys: list[SecretStr] = Field(
        default_factory=list, description="older receipt signing seeds, still published"
    )
    # HMAC of every breaker message shared through Redis; required outside development
    # when redis_url is set
    redis_key: SecretStr = SecretStr("")
    audit_head_key: SecretStr = SecretStr("")  # Ed25519 seed signing the audit chain's heads

    @model_validator(mode="after")
    def _distinct(self) -> SecuritySettings:
        refuse_identical_keys(self)
        return self


def _key_bytes(value: str) -> bytes | None:
    """A key's bytes for comparison (standard or URL-safe base64, padded or not)."""
    text = value.strip()
    try:
        return base64.b64decode((text + "=" * (-len(text) % 4)).replace("-", "+")
                                .replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None  # the keyring reports it, naming the key


def refuse_identical_keys(security: BaseModel) -> None:
    """One key, one purpose: two settings holding the same key stop the start."""
    seen: dict[bytes, str] = {}
    for name, value in security:
        if not isinstance(value, SecretStr) or not value.get_secret_value():
            continue
        raw = _key_bytes(value.get_secret_value())
        if raw is None:
            continue
        if raw in seen:
            raise ValueError(f"{name} is the same key as {seen[raw]} (one key, one purpose)")
        seen[raw] = name


class AuditSettings(_Section):
    """Where signed audit heads are exported as they are made (off while empty)."""

    anchor_file: str = ""  # one JSON line per head, appended (O_APPEND) and fsync'd
    anchor_url: str = ""  # https:// receiving a POST of the same JSON, retried
    anchor_timeout_s: float = Field(5.0, gt=0)
    # raw Ed25519 public keys (base64url) of earlier audit head keys, still verified
    head_public_keys: list[str] = Field(default_factory=list)

    @field_validator("anchor_url")
    @classmethod
    def _check_anchor_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError("an anchor url is https:// (or http://) with a host")
        return value


class ProvisionalSettings(_Section):
    max_amc_cents_per_claim: int = Field(30000, ge=0)
    max_amc_cents_per_beneficiary_per_day: int = Field(60000, ge=0)
    max_outstanding_cents_per_pharmacy: int = Field(500000, ge=0)
    rights_cache_days: int = Field(30, ge=0)
    receipt_validity_days: int = Field(90, ge=1)


class LimitsSettings(_Section):
    rights_per_minute: int = Field(120, ge=1)
    claims_per_minute: int = Field(1200, ge=1)
    receipts_per_minute: int = Field(60, ge=1)  # public receipt lookups, per client address
    reads_per_minute: int = Field(600, ge=1)  # claims, events, exposure, operators: per key
    long_polls_per_key: int = Field(3, ge=1)  # `GET /v1/events?wait=` waiting at once
    # distinct people whose rights one key, or one pharmacy's keys together, may look up in
    # a (UTC) hour and day, counted in the database for every instance; one more: 429 and
    # the key is suspended until operations lift it (gateway.security.abuse)
    rights_people_per_key_per_hour: int = Field(100, ge=1)
    rights_people_per_key_per_day: int = Field(400, ge=1)
    rights_people_per_pharmacy_per_hour: int = Field(150, ge=1)
    rights_people_per_pharmacy_per_day: int = Field(600, ge=1)
    max_body_bytes: int = Field(64 * 1024, ge=1024)


class ProSanteConnectSettings(_Section):
    """Console login for health professionals through Pro Santé Connect (OpenID Connect).

    Off while `issuer` is empty. The redirect URI registered with the provider is
    `{public_url}/console/psc/callback`."""

    issuer: str = ""  # discovery at {issuer}/.well-known/openid-configuration
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    scopes: list[str] = Field(default_factory=lambda: ["openid", "scope_all"])
    timeout_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _complete(self) -> ProSanteConnectSettings:
        if self.issuer and not self.client_id:
            raise ValueError("client_id: required when issuer is set")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)


class ConsoleSettings(_Section):
    """People's console accounts: lockout, login throttling, session lifetimes."""

    lock_after_failures: int = Field(5, ge=1)  # consecutive failures, then operations unlocks
    address_failures_per_window: int = Field(20, ge=1)  # failed logins per client address...
    address_window_s: int = Field(900, ge=60, le=86400)  # ...within this window, then 429
    idle_timeout_s: int = Field(1800, ge=60)  # what the person does, not the page's refresh
    max_session_s: int = Field(12 * 3600, ge=300, le=7 * 86400)
    pending_login_s: int = Field(300, ge=30)  # between the password and the second factor


class OperatorSettings(_Section):
    name: str = Field(pattern=r"^[a-z0-9-]+$")
    adapter: str
    base_url: str
    insurers: list[str] = Field(min_length=1)
    provisional: Literal["none", "cached_rights", "card"] = "card"
    timeout_s: float = Field(2.0, gt=0)
    deadline_s: float = Field(3.0, gt=0)
    breaker_fail_max: int = Field(5, ge=1)
    breaker_reset_s: float = Field(15, gt=0)
    breaker_reset_max_s: float = Field(120, gt=0)
    probe_interval_s: float = Field(5, gt=0)
    drain_per_s: float = Field(20, gt=0)
    drain_ramp_s: float = Field(10, ge=0)
    max_attempts: int = Field(12, ge=1)
    max_queue_age_s: float = Field(7 * 24 * 3600, gt=0)  # then `failed`, for operations staff
    # the batch hand-over (gateway.handover): the operator's public JWKs; off while empty
    handover_encryption_key: dict[str, str] = Field(default_factory=dict)
    handover_ack_key: dict[str, str] = Field(default_factory=dict)
    # at most 10,000: a file of some 12.6 MB the operator takes whole (docs/handover.md)
    handover_max_claims: int = Field(1000, ge=1, le=MAX_BATCH_CLAIMS)

    @field_validator("handover_encryption_key")
    @classmethod
    def _check_encryption_key(cls, value: dict[str, str]) -> dict[str, str]:
        check_jwk(value, algs=ENCRYPTION_ALGS)
        return value

    @field_validator("handover_ack_key")
    @classmethod
    def _check_ack_key(cls, value: dict[str, str]) -> dict[str, str]:
        check_jwk(value, algs=SIGNATURE_ALGS)
        return value

    @property
    def hands_over(self) -> bool:
        """Both keys are configured: batches can be exported and acknowledged."""
        return bool(self.handover_encryption_key and self.handover_ack_key)

    @model_validator(mode="after")
    def _check_patterns(self) -> OperatorSettings:
        for pattern in self.insurers:
            if not INSURER_PATTERN.match(pattern):
                raise ValueError(
                    f"insurers: {pattern!r} is neither an insurer number nor a prefix ending in *"
                )
        return self


class WebhookSettings(_Section):
    """A signed copy of one pharmacy's events, POSTed to `url` (Standard Webhooks)."""

    finess: str
    url: str
    secret: SecretStr  # "whsec_" + base64 of the key bytes
    allow_private: bool = False  # permit private, loopback or link-local targets

    @field_validator("finess")
    @classmethod
    def _check_finess(cls, value: str) -> str:
        return check_finess(value)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a webhook url is http:// or https:// with a host")
        return value

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: SecretStr) -> SecretStr:
        decode_secret(value.get_secret_value())
        return value


class Settings(BaseSettings):
    """All settings; `load_settings` merges the file and the environment into it."""

    model_config = SettingsConfigDict(extra="forbid")

    environment: Literal["development", "production"] = "production"
    database_url: str = "sqlite:///var/gateway.db"
    redis_url: str = ""
    public_url: str = "http://127.0.0.1:8000"
    data_dir: Path = Path("var")
    log_level: str = "INFO"
    # proxies (addresses or CIDR networks) whose X-Forwarded-For/-Proto are believed; the
    # client address of every per-address limit comes from those headers only behind them
    trusted_proxies: list[str] = Field(default_factory=list)
    api_docs: bool | None = None  # /docs and /openapi.json; None: in development only
    # when set, /metrics answers only `Authorization: Bearer <metrics_token>` (a secret)
    metrics_token: SecretStr = SecretStr("")
    # after SIGTERM: seconds of 503 to new requests (and /readyz) before the listener closes,
    # for a load balancer to take the instance out (gateway.web.serving)
    shutdown_delay_s: float = Field(0.0, ge=0, le=300)
    retention_days: int = Field(400, ge=1)  # personal data of final claims, then purged
    security: SecuritySettings = SecuritySettings()
    provisional: ProvisionalSettings = ProvisionalSettings()
    limits: LimitsSettings = LimitsSettings()
    console: ConsoleSettings = ConsoleSettings()
    pro_sante_connect: ProSanteConnectSettings = ProSanteConnectSettings()
    audit: AuditSettings = AuditSettings()
    operators: list[OperatorSettings] = Field(default_factory=list)
    webhooks: list[WebhookSettings] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `load_settings` merges the environment itself, ignoring unknown variables.
        return (init_settings,)

    @model_validator(mode="after")
    def _check_operators(self) -> Settings:
        seen_names: set[str] = set()
        owner_of: dict[str, str] = {}
        for index, operator in enumerate(self.operators):
            if operator.name in seen_names:
                raise ValueError(f"operators[{index}].name: duplicate operator {operator.name!r}")
            seen_names.add(operator.name)
            for pattern in operator.insurers:
                if pattern in owner_of:
                    raise ValueError(
                        f"operators[{index}].insurers: {pattern!r} is already routed to "
                        f"{owner_of[pattern]!r}"
                    )
                owner_of[pattern] = operator.name
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP address or network") from exc
        return value

    @property
    def is_development(self) -> bool:
        return self.environment == "development"

    @property
    def serves_api_docs(self) -> bool:
        return self.is_development if self.api_docs is None else self.api_docs

    def operator(self, name: str) -> OperatorSettings | None:
        return next((op for op in self.operators if op.name == name), None)


SECTION_MODELS: dict[str, type[BaseModel]] = {
    "security": SecuritySettings,
    "provisional": ProvisionalSettings,
    "limits": LimitsSettings,
    "console": ConsoleSettings,
    "pro_sante_connect": ProSanteConnectSettings,
    "audit": AuditSettings,
}


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ""
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return "; ".join(lines)


def config_path(explicit: str | Path | None = None) -> Path | None:
    """The file to read: the explicit path, else GATEWAY_CONFIG, else the default if present."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("GATEWAY_CONFIG"):
        return Path(env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def _env_value(raw: str) -> Any:
    """Lists and tables may be given as JSON (`["80*"]`); anything else stays a string."""
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def apply_env(values: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Overlay `GATEWAY_<SECTION>__<KEY>` variables that name a known setting; ignore others."""
    merged = copy.deepcopy(values)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "GATEWAY_CONFIG":
            continue
        path = name[len(ENV_PREFIX):].lower().split("__")
        if len(path) == 1 and path[0] in Settings.model_fields:
            merged[path[0]] = _env_value(raw)
        elif len(path) == 2 and path[0] in SECTION_MODELS:
            if path[1] in SECTION_MODELS[path[0]].model_fields:
                merged.setdefault(path[0], {})[path[1]] = _env_value(raw)
        elif len(path) == 3 and path[0] == "operators" and path[1].isdigit():
            operators = merged.get("operators", [])
            index = int(path[1])
            if index < len(operators) and path[2] in OperatorSettings.model_fields:
                operators[index][path[2]] = _env_value(raw)
    return merged


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (if any), apply env overrides, validate; raise ConfigError."""
    values: dict[str, Any] = {}
    source = config_path(path)
    if source is not None:
        try:
            values = tomllib.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{source}: no such configuration file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    values = apply_env(values, os.environ)
    values.update(overrides)
    try:
        return Settings(**values)
    except ValidationError as exc:
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}{_describe(exc)}") from exc
