"""The configuration reference (docs/configuration.md), generated from `gateway.settings`.

Why generated: the models are the truth, so the page lists every key with the type,
default and bounds the code enforces. The one-line descriptions live here (or in a
field's `description=`); tests/unit/test_config_reference.py fails when a setting has
none, when a description names a setting that no longer exists, or when the page on
disk differs from what this module prints.

    python -m gateway.cli.config_reference > docs/configuration.md
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from gateway.settings import ENV_PREFIX, SECTION_MODELS, Settings

GENERATOR = "python -m gateway.cli.config_reference > docs/configuration.md"

# One line per section: what it is for. The key is the section's path ("" is the top level).
SECTION_TEXTS: dict[str, str] = {
    "": "Keys written before the first `[section]` of the file.",
    "security": (
        "The gateway's secret keys, each standard or URL-safe base64 (padded or not). "
        "Outside development every key but `redis_key` is required, and `redis_key` too "
        "once `redis_url` is set; in development a missing key is generated once under "
        "`data_dir` (mode 0600). No two settings may hold the same key (one key, one "
        "purpose). Give them from the environment or a secrets manager, never in a file "
        "kept in a repository."),
    "provisional": (
        "Caps on provisional coverage receipts, the promise that a patient leaves without "
        "advancing the AMC part while the claim waits in the queue."),
    "limits": (
        "Rate limits and budgets. Per key and per sliding minute unless said otherwise; "
        "shared by every instance of a deployment (Redis when `redis_url` is set, else the "
        "database). Over a limit: 429 with `Retry-After`."),
    "console": "People's console accounts: lockout, login throttling, session lifetimes.",
    "pro_sante_connect": (
        "Console login for health professionals through Pro Santé Connect (OpenID Connect). "
        "Off while `issuer` is empty. Register `{public_url}/console/psc/callback` as the "
        "redirect URI."),
    "audit": (
        "Where each signed audit head is exported as it is made, outside the database. Both "
        "sinks are off while empty; `gateway audit verify --anchor FILE` checks the chain "
        "against an anchor file."),
    "operators": (
        "One table per operator the gateway forwards claims to. Routing: an exact insurer "
        "number beats a prefix, a longer prefix beats a shorter one; a pattern under two "
        "operators, or two operators with one name, stops the start."),
    "webhooks": (
        "One table per pharmacy endpoint that receives a signed copy of that pharmacy's "
        "events (Standard Webhooks headers; ids only, no personal data), retried with "
        "backoff."),
}

# One line per setting, by dotted path (list tables by their name: "operators.name").
DESCRIPTIONS: dict[str, str] = {
    "environment": (
        "`production` requires every key; `development` generates missing keys under "
        "`data_dir`, and is meant for `gateway demo` only (`gateway serve` warns on stderr)."),
    "database_url": (
        "SQLAlchemy URL of the database: `sqlite:///path/to/file.db` or "
        "`postgresql+psycopg://user:password@host:5432/name`. Instances sharing one "
        "database form one deployment."),
    "redis_url": (
        "Redis URL (`redis://host:6379/0`) for what a deployment's instances share quickly: "
        "breaker states, rate-limit counts, long-poll places and wake-ups. Empty: breakers "
        "are per instance, limits and long-poll places are counted in the database."),
    "public_url": (
        "The address pharmacies and patients reach the gateway at: receipt links and QR "
        "codes, the receipts' issuer, the Pro Santé Connect redirect URI."),
    "data_dir": "Development only: where missing keys are generated, one file per key.",
    "log_level": (
        "Python logging level of the JSON log lines written to stderr (`DEBUG`, `INFO`, "
        "`WARNING`, `ERROR`)."),
    "trusted_proxies": (
        "Addresses or networks of the reverse proxies whose `X-Forwarded-For` and "
        "`X-Forwarded-Proto` are believed; from anyone else both are ignored."),
    "api_docs": (
        "Serve the Swagger UI at `/docs`. Unset: on in development, off otherwise. "
        "`/openapi.json` is served either way."),
    "metrics_token": (
        "When set, `/metrics` answers only `Authorization: Bearer <token>` (else 401)."),
    "shutdown_delay_s": (
        "After SIGTERM, seconds during which `/readyz` and every new request answer 503 "
        "`shutting-down` before the listener closes: time for a load balancer to take the "
        "instance out."),
    "retention_days": (
        "Days after its last change before the personal data of a final claim (accepted, "
        "rejected, failed, cancelled) is purged; queued and pending claims never are."),
    "security.data_key": (
        "Master key wrapping the per-pharmacy, per-month data keys that encrypt "
        "personal data (AES-256-GCM). Without it nothing stored decrypts."),
    "security.signing_key": "Ed25519 seed signing provisional receipts.",
    "security.index_key": (
        "Key of the keyed hashes used to look people up by NIR; replacing it "
        "makes existing hashes unmatchable."),
    "security.audit_key": "Key of the HMAC sealing each audit entry.",
    "security.credential_key": (
        "Pepper of API key secrets, session tokens and recovery codes, and key "
        "of the MACs on key, person and session rows; replacing it invalidates all of them."),
    "security.redis_key": (
        "Key of the HMAC on every breaker message shared through Redis."),
    "security.audit_head_key": (
        "Ed25519 seed signing the audit chain's heads; "
        "`gateway audit public-key` prints its public key."),
    "provisional.max_amc_cents_per_claim": "Largest AMC part one receipt may promise.",
    "provisional.max_amc_cents_per_beneficiary_per_day": (
        "Largest AMC part promised to one person (their NIR) per service date, over all "
        "open receipts."),
    "provisional.max_outstanding_cents_per_pharmacy": (
        "Largest total of a pharmacy's open receipts."),
    "provisional.rights_cache_days": (
        "Age beyond which a cached rights answer or an accepted claim is no evidence for "
        "`cached_rights`, is no longer answered when the operator is down, and is purged."),
    "provisional.receipt_validity_days": "Days a receipt stays valid after it is issued.",
    "limits.rights_per_minute": "`POST /v1/rights` requests per key.",
    "limits.claims_per_minute": "`POST /v1/claims` requests per key.",
    "limits.receipts_per_minute": (
        "Public `GET /v1/receipts/{id}` lookups per client address."),
    "limits.reads_per_minute": (
        "Reads per key: claims, events (long-polls included), exposure, operators, an "
        "operator's queue and replay."),
    "limits.long_polls_per_key": (
        "`GET /v1/events?wait=` requests of one key waiting at once; the next one gets 429."),
    "limits.rights_people_per_key_per_hour": (
        "Distinct people whose rights one key may look up in a UTC hour; one more: 429 "
        "`rights-budget-exceeded` and the key is suspended until lifted."),
    "limits.rights_people_per_key_per_day": "The same budget per key, per UTC day.",
    "limits.rights_people_per_pharmacy_per_hour": (
        "The same budget for all of one pharmacy's keys together, per UTC hour."),
    "limits.rights_people_per_pharmacy_per_day": (
        "The same budget for all of one pharmacy's keys together, per UTC day."),
    "limits.max_body_bytes": "Largest request body; a larger one (chunked too) gets 413.",
    "console.lock_after_failures": (
        "Consecutive failed logins after which an account locks until operations staff "
        "unlock it."),
    "console.address_failures_per_window": (
        "Failed logins from one client address within `address_window_s`; then 429."),
    "console.address_window_s": "The window of `address_failures_per_window`, in seconds.",
    "console.idle_timeout_s": (
        "Seconds without the person doing anything (the dashboard's own refresh does not "
        "count) before the session ends."),
    "console.max_session_s": "Longest a session lasts, whatever the person does.",
    "console.pending_login_s": (
        "Seconds allowed between the password and the second factor."),
    "pro_sante_connect.issuer": (
        "The provider's issuer URL; discovery at `{issuer}/.well-known/openid-configuration`."),
    "pro_sante_connect.client_id": "The client id the provider registered for this gateway.",
    "pro_sante_connect.client_secret": "The client secret that goes with `client_id`.",
    "pro_sante_connect.scopes": "Scopes asked for at login.",
    "pro_sante_connect.timeout_s": "Timeout of each call to the provider, in seconds.",
    "audit.anchor_file": (
        "A file each signed head is appended to as one JSON line (`O_APPEND`, fsync'd); "
        "keep it where the database's users cannot rewrite it."),
    "audit.anchor_url": (
        "An endpoint receiving a POST of the same JSON for each head, retried."),
    "audit.anchor_timeout_s": "Timeout of each POST to `anchor_url`, in seconds.",
    "audit.head_public_keys": (
        "Public keys (raw Ed25519, base64url) of earlier audit head keys, so that heads "
        "they signed still verify."),
    "operators.name": "The operator's name, used in metrics, the API and the CLI.",
    "operators.adapter": (
        "The adapter that speaks to it, by its registry slug (`reference`)."),
    "operators.base_url": "The operator's base URL; every request of the adapter goes there.",
    "operators.insurers": (
        "Insurer (AMC) numbers routed to this operator: an exact number, or a prefix ending "
        "in `*`."),
    "operators.provisional": (
        "On what evidence a queued claim gets a receipt: `card` (the insurer agreed to pay "
        "on the card during outages), `cached_rights` (a recent rights answer or accepted "
        "claim of the pharmacy), `none` (never)."),
    "operators.timeout_s": "Timeout of one attempt, in seconds.",
    "operators.deadline_s": (
        "The most a pharmacy waits for the operator, retries included; then the claim is "
        "queued and the answer is 202."),
    "operators.breaker_fail_max": "Consecutive failures that open the breaker.",
    "operators.breaker_reset_s": (
        "First open time of the breaker, in seconds; it doubles on repeated trips."),
    "operators.breaker_reset_max_s": "Longest open time of the breaker (±20 % jitter).",
    "operators.probe_interval_s": (
        "Seconds between active `GET /health` probes; two failed in a row open the breaker, "
        "and the probe is the single half-open trial."),
    "operators.drain_per_s": (
        "Queued claims sent per second once the operator is back, all instances together."),
    "operators.drain_ramp_s": (
        "Seconds over which the drain rises from 10 % to 100 % of `drain_per_s` after a "
        "recovery."),
    "operators.max_attempts": "Failed attempts after which a claim is `failed`.",
    "operators.max_queue_age_s": (
        "Seconds after its creation after which a claim that still fails is `failed`."),
    "operators.handover_encryption_key": (
        "The operator's public key (a JWK: EC P-256/P-384/P-521 or OKP X25519 for "
        "ECDH-ES+A256KW, RSA of 2048 bits or more for RSA-OAEP-256) that hand-over "
        "batches are encrypted to (docs/handover.md); the hand-over is off while empty."),
    "operators.handover_ack_key": (
        "The operator's public key (a JWK: OKP Ed25519 for EdDSA, EC P-256 for ES256) "
        "that its signed acknowledgement files are verified with."),
    "operators.handover_max_claims": (
        "Most claims in one hand-over batch (`--max` and the API's `max` ask for fewer). "
        "At most 10000: a file of some 12.6 MB that the operator takes whole; hand a "
        "larger backlog over in several batches."),
    "webhooks.finess": "The pharmacy (FINESS) whose events are sent.",
    "webhooks.url": "Where the events are POSTed.",
    "webhooks.secret": "`whsec_` followed by the base64 of the signing key.",
    "webhooks.allow_private": (
        "Allow a target that resolves to a private, loopback or link-local address."),
}

# Checks the models make in validators (or the keyring makes at start), which the field
# metadata cannot show.
CHECKS: dict[str, str] = {
    "trusted_proxies": "each an IP address or network",
    "security.data_key": "32 bytes",
    "security.signing_key": "32 bytes",
    "security.index_key": "32 bytes",
    "security.audit_key": "32 bytes",
    "security.credential_key": "32 bytes",
    "security.redis_key": "32 bytes",
    "security.audit_head_key": "32 bytes",
    "security.previous_data_keys": "each 32 bytes",
    "security.previous_signing_keys": "each 32 bytes",
    "pro_sante_connect.client_id": "required when `issuer` is set",
    "audit.anchor_url": "`http://` or `https://` with a host",
    "operators.name": "unique",
    "operators.adapter": "a registered adapter",
    "operators.insurers": "digits (1 to 12), optionally ending in `*`; each under one operator",
    "operators.handover_encryption_key": "a public JWK of a listed type, or empty",
    "operators.handover_ack_key": "a public JWK of a listed type, or empty",
    "webhooks.finess": "a valid FINESS",
    "webhooks.url": "`http://` or `https://` with a host",
    "webhooks.secret": "a key of 24 to 64 bytes",
}


@dataclass(frozen=True, slots=True)
class Setting:
    path: str
    key: str
    type: str
    default: str
    constraint: str
    description: str | None


@dataclass(frozen=True, slots=True)
class Section:
    path: str  # "" for the top level
    is_list: bool  # a [[table]] that may appear several times
    settings: list[Setting]

    @property
    def title(self) -> str:
        if not self.path:
            return "Top level"
        return f"`[[{self.path}]]`" if self.is_list else f"`[{self.path}]`"


def model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The settings model a field holds, and whether it holds a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        if isinstance(item, type) and issubclass(item, BaseModel):
            return item, True
    return None, False


def sections(model: type[BaseModel] = Settings, path: str = "",
             is_list: bool = False) -> Iterator[Section]:
    """The model's own keys as one section, then each nested model's, recursively."""
    own: list[Setting] = []
    nested: list[tuple[str, type[BaseModel], bool]] = []
    for key, info in model.model_fields.items():
        dotted = f"{path}.{key}" if path else key
        inner, many = model_of(info.annotation)
        if inner is not None:
            nested.append((dotted, inner, many))
        else:
            own.append(describe(dotted, key, info))
    yield Section(path, is_list, own)
    for dotted, inner, many in nested:
        yield from sections(inner, dotted, many)


def describe(path: str, key: str, info: FieldInfo) -> Setting:
    return Setting(
        path=path, key=key, type=type_name(info.annotation), default=default_of(info),
        constraint="; ".join(filter(None, [*bounds_of(info), CHECKS.get(path)])),
        description=sentence(info.description or DESCRIPTIONS.get(path)),
    )


def sentence(text: str | None) -> str | None:
    """A description as a sentence: capital first letter, final full stop."""
    if not text:
        return None
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{json.dumps(arg)}`" for arg in args)
    if origin is list:
        return f"list of {type_name(args[0])}s"
    if origin in (Union, types.UnionType):
        named = [type_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(named) + (" or unset" if type(None) in args else "")
    names = {SecretStr: "secret string", str: "string", int: "integer", float: "number",
             bool: "boolean", Path: "path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def default_of(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]  # ours take no argument
    else:
        value = info.default
    return "unset" if value is None else f"`{toml_value(value)}`"


def toml_value(value: Any) -> str:
    """A default as it would be written in the TOML file."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return repr(value)


def bounds_of(info: FieldInfo) -> list[str]:
    """The bounds pydantic enforces on a field, in words."""
    words = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge):
            words.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            words.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            words.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            words.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            words.append(f"at least {item.min_length}")
        elif isinstance(item, annotated_types.MaxLen):
            words.append(f"at most {item.max_length}")
        elif getattr(item, "pattern", None):
            words.append(f"matches `{item.pattern}`")
    return words


def env_name(section: Section, key: str) -> str | None:
    """The variable that overrides one key (see `gateway.settings.apply_env`), if any."""
    if not section.path:
        return f"{ENV_PREFIX}{key.upper()}"
    if section.path in SECTION_MODELS:
        return f"{ENV_PREFIX}{section.path.upper()}__{key.upper()}"
    if section.path == "operators":
        return f"{ENV_PREFIX}OPERATORS__0__{key.upper()}"
    return None


def env_line(section: Section) -> str:
    whole = f"`{ENV_PREFIX}{section.path.upper()}`"
    example = env_name(section, section.settings[0].key) if section.settings else None
    if example is None:
        return f"Environment: only the whole list, as JSON in {whole}."
    if section.path == "operators":
        return (f"Environment: `{ENV_PREFIX}OPERATORS__<INDEX>__<KEY>` for an operator the "
                f"file defines, counted from 0 (e.g. `{example}`), or the whole list as "
                f"JSON in {whole}.")
    pattern = f"{section.path.upper()}__<KEY>" if section.path else "<KEY>"
    return f"Environment: `{ENV_PREFIX}{pattern}` (e.g. `{example}`)."


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(section: Section) -> list[str]:
    lines = ["| key | type | default | constraint | description |",
             "| --- | --- | --- | --- | --- |"]
    for s in section.settings:
        lines.append("| " + " | ".join(cell(part) for part in (
            f"`{s.key}`", s.type, s.default, s.constraint or "—", s.description or "")) + " |")
    return lines


INTRO = f"""\
# Configuration reference

Generated from `gateway/settings.py` by `{GENERATOR}`.
Do not edit it by hand: `tests/unit/test_config_reference.py` fails when it differs.

The gateway reads one TOML file: `--config PATH`, else the file named by `GATEWAY_CONFIG`,
else `config/gateway.toml` when it exists. Environment variables then override it key by
key: `GATEWAY_<KEY>` at the top level, `GATEWAY_<SECTION>__<KEY>` in a section. A list or
table is given as JSON (`GATEWAY_TRUSTED_PROXIES='["10.0.0.5"]'`); any other value as text,
converted to the key's type. Unknown `GATEWAY_*` variables are ignored, but an unknown key
in the file, a value out of bounds or a missing required value stops the start with a
message naming the key. A key of an `[[operators]]` table is overridden by the table's
position in the file (`GATEWAY_OPERATORS__0__DEADLINE_S`); a whole section or list of
tables may be given as JSON (`GATEWAY_WEBHOOKS='[{{...}}]'`), replacing the file's.

Durations are in seconds (`_s`), money in euro cents (`_cents`). `config/gateway.toml` is a
commented example shaped for production."""


def render() -> str:
    parts = [INTRO]
    for section in sections():
        parts.append(f"## {section.title}")
        parts.append(SECTION_TEXTS.get(section.path, ""))
        parts.append(env_line(section))
        parts.append("\n".join(table(section)))
    return "\n\n".join(part for part in parts if part) + "\n"


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
