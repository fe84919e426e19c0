"""Signed heads of the audit chain: Ed25519 over (deployment, entry id, entry hash, instant).

Every few minutes, and once at shutdown, the chain's last entry is signed with the
audit head key (`security.audit_head_key`, a key of its own) into `audit_heads`, only
when it changed, and exported as it is made to the configured anchors
(`gateway.audit.anchors`: an append-only file, an HTTPS endpoint). A head is a
promise that the chain contained that entry with that hash: truncating the tail, or
rewriting the chain and re-hashing it (even with the audit key), breaks a promise the
attacker cannot re-sign without the head key, and a copy outside the database
survives the deletion of `audit_heads` itself.

Heads signed before migration 0012 used the receipt signing key and a message
without the deployment: they are still verified, against the receipt JWKS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.exc import SQLAlchemyError

from gateway.audit import repository
from gateway.audit.anchors import Anchors, head_of
from gateway.audit.trail import AuditLog, Verification, locked_head
from gateway.receipts.signing import ReceiptSigner, key_id
from gateway.security.keyring import load_audit_head_key, load_keyring
from gateway.settings import ConfigError, Settings
from gateway.storage.db import Database
from gateway.storage.deployment import ensure_deployment_id, read_deployment_id
from gateway.storage.health import DatabaseUnavailable
from gateway.storage.models import AuditEntry, AuditHead, utcnow
from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)
INTERVAL_S = 300.0


def head_message(head: AuditHead, deployment: str | None = None) -> bytes:
    """What a head's signature covers; the instant is included so it cannot be moved.
    Without a deployment: the legacy form, signed with the receipt key."""
    signed_at = head.signed_at.isoformat(timespec="microseconds")
    if deployment is None:
        return f"gateway-audit-head|{head.entry_id}|{head.entry_hash}|{signed_at}".encode()
    return (f"gateway-audit-head|v2|{deployment}|{head.entry_id}|{head.entry_hash}|"
            f"{signed_at}").encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class HeadSigner:
    """Signs heads with the audit head key, bound to this database's deployment id."""

    def __init__(self, seed: bytes) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_raw = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.kid = key_id(self.public_raw)
        self.deployment = ""  # read from the database at each signature

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadSigner:
        return cls(load_audit_head_key(settings))

    def public_jwk(self) -> dict[str, str]:
        """What to publish so that anyone can check heads and anchors."""
        return {"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": self.kid,
                "x": _b64(self.public_raw)}

    def sign(self, session: UnitOfWork) -> AuditHead | None:
        """Sign the current head in this transaction; None when empty or already signed."""
        link = locked_head(session)
        if link is None:
            return None
        entry_id, entry_hash = link
        latest = repository.latest_head(session)
        if latest is not None and (latest.entry_id, latest.entry_hash) == link:
            return None
        self.deployment = ensure_deployment_id(session)
        head = AuditHead(entry_id=entry_id, entry_hash=entry_hash, signature="",
                         kid=self.kid, signed_at=utcnow())
        head.signature = _b64(self._private.sign(head_message(head, self.deployment)))
        session.add(head)
        session.flush()  # its id names it in the anchors
        return head


@dataclass(slots=True)
class HeadKeys:
    """Public keys that verify heads: the audit head keys (current and earlier ones) and,
    for legacy heads only, the receipt keys."""

    heads: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    legacy: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    def add_head_key(self, raw: bytes) -> None:
        self.heads[key_id(raw)] = Ed25519PublicKey.from_public_bytes(raw)

    def valid(self, head: AuditHead, deployment: str | None) -> bool:
        """Signed by a head key over this deployment, or by a receipt key (legacy form)."""
        try:
            signature = _unb64(head.signature)
        except (binascii.Error, ValueError):
            return False
        for keys, bound in ((self.heads, deployment), (self.legacy, None)):
            key = keys.get(head.kid)
            if key is None or (keys is self.heads and not deployment):
                continue
            try:
                key.verify(signature, head_message(head, bound))
                return True
            except InvalidSignature:
                continue
        return False


def public_keys(jwks: dict[str, Any]) -> dict[str, Ed25519PublicKey]:
    """kid -> Ed25519 public key, from a JWKS such as ReceiptSigner.jwks()."""
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(_unb64(jwk["x"]))
    return keys


def head_keys_of(settings: Settings) -> HeadKeys:
    """The configured head key, earlier ones (`audit.head_public_keys`), the receipt JWKS."""
    keyring = load_keyring(settings)
    jwks = ReceiptSigner(keyring.signing_key, keyring.previous_signing_keys).jwks()
    keys = HeadKeys(legacy=public_keys(jwks))
    keys.add_head_key(HeadSigner.from_settings(settings).public_raw)
    for index, text in enumerate(settings.audit.head_public_keys):
        try:
            keys.add_head_key(_unb64(text))
        except (binascii.Error, ValueError) as exc:
            raise ConfigError(f"audit.head_public_keys[{index}]: not an Ed25519 public key "
                              "(base64url of 32 bytes)") from exc
    return keys


def check_heads(heads: Iterable[AuditHead], hashes: dict[int, str], keys: HeadKeys,
                deployment: str | None, *,
                label: Callable[[AuditHead], str] = lambda head: f"signed head #{head.id}",
                ) -> tuple[int, str] | None:
    """The lowest entry id a head contradicts, with the reason; None if all hold."""
    broken: list[tuple[int, str]] = []
    last, own_key_seen = max(hashes, default=0), False
    for head in heads:  # in id order
        name = f"{label(head)} of {head.signed_at.isoformat(timespec='seconds')}"
        legacy = head.kid in keys.legacy and head.kid not in keys.heads
        if not keys.valid(head, deployment):
            broken.append((head.entry_id, f"{name} has an invalid signature or an unknown "
                                          f"key {head.kid!r}"))
        elif legacy and own_key_seen:  # a stolen receipt key must not re-sign a rewrite
            broken.append((head.entry_id, f"{name} is signed with a receipt key after the "
                                          "audit head key took over"))
        elif head.entry_id > last:
            broken.append((head.entry_id, f"missing: truncated tail: the chain ends at entry "
                                          f"{last}, but the {name} covers it"))
        elif head.entry_id not in hashes:
            broken.append((head.entry_id, f"missing: the {name} covers it (chain truncated "
                                          "or entry deleted)"))
        elif hashes[head.entry_id] != head.entry_hash:
            broken.append((head.entry_id, f"rewritten: its hash differs from the {name}"))
        own_key_seen = own_key_seen or not legacy
    return min(broken) if broken else None


def worst(chain: Verification, found: tuple[int, str] | None,
          entries: list[AuditEntry]) -> Verification:
    """The chain's own verdict or a head's, whichever names the lower entry."""
    if found is None:
        return chain
    entry_id, problem = found
    if chain.first_broken_id is not None and chain.first_broken_id <= entry_id:
        return chain
    checked = sum(1 for entry in entries if (entry.id or 0) < entry_id)
    return Verification(False, checked, entry_id, problem)


def verify_trail(session: UnitOfWork, *, audit_log: AuditLog, keys: HeadKeys) -> Verification:
    """The chain (hashes, links, seals) and every signed head; the lowest broken entry wins."""
    entries = repository.entries(session)
    chain = audit_log.verify_entries(entries)
    heads = repository.heads(session)
    found = check_heads(heads, {e.id: e.entry_hash for e in entries if e.id}, keys,
                        read_deployment_id(session))
    return worst(chain, found, entries)


def verify_settings(settings: Settings, database: Database) -> Verification:
    """What `gateway audit verify` runs: keys from the configuration, then the whole trail."""
    keys = head_keys_of(settings)
    audit_log = AuditLog.from_settings(settings)
    return database.read_now(lambda s: verify_trail(s, audit_log=audit_log, keys=keys))


@dataclass(slots=True)
class AnchorReport:
    """What the anchor lines say: heads of this deployment checked, others ignored, lines
    that are not genuine anchors, and the lowest entry an anchored head contradicts."""

    result: Verification
    checked: int
    others: int
    forged: list[str]


def verify_anchors(session: UnitOfWork, lines: list[tuple[int, dict[str, Any] | None]], *,
                   audit_log: AuditLog, keys: HeadKeys) -> AnchorReport:
    """The chain and its heads, then every anchored head against the chain."""
    entries = repository.entries(session)
    chain = verify_trail(session, audit_log=audit_log, keys=keys)
    ours = read_deployment_id(session)
    anchored, forged, others = [], [], 0
    for number, record in lines:
        try:
            head, deployment = head_of(record or {})
        except ValueError:
            forged.append(f"anchor line {number}: not an anchor record")
            continue
        if not keys.valid(head, deployment) or head.kid in keys.legacy:
            forged.append(f"anchor line {number}: forged: invalid signature or unknown key "
                          f"{head.kid!r} (entry {head.entry_id})")
        elif deployment != ours:
            others += 1
        else:
            head.id = number  # named by its line in what follows
            anchored.append(head)
    found = check_heads(anchored, {e.id: e.entry_hash for e in entries if e.id}, keys, ours,
                        label=lambda head: f"anchored head at line {head.id}")
    return AnchorReport(worst(chain, found, entries), len(anchored), others, forged)


class _Context(Protocol):
    settings: Settings
    db: Database


async def _sign_once(ctx: _Context, signer: HeadSigner, anchors: Anchors) -> None:
    try:
        head = await ctx.db.write(signer.sign)
    except SQLAlchemyError as exc:
        log.warning("audit.head_failed", error=type(exc).__name__)
        head = None
    if head is not None:
        log.info("audit.head_signed", entry_id=head.entry_id, kid=head.kid)
    await anchors.publish(head, signer.deployment)  # also retries what failed before


async def run_audit_heads(ctx: _Context, stopping: asyncio.Event, *,
                          interval_s: float = INTERVAL_S,
                          transport: httpx.AsyncBaseTransport | None = None) -> None:
    """Sign the head every `interval_s` while it changes, and once more at shutdown; each
    new head goes to the anchors as it is made."""
    signer = HeadSigner.from_settings(ctx.settings)
    anchors = Anchors.from_settings(ctx.settings, transport=transport)
    try:
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), timeout=interval_s)
            except TimeoutError:
                try:
                    await _sign_once(ctx, signer, anchors)
                except DatabaseUnavailable:
                    pass  # logged once by the database's health; signed when it is back
    finally:
        try:
            await _sign_once(ctx, signer, anchors)  # also when cancelled: the lifespan gathers us
        finally:
            await anchors.aclose()
