"""Signed heads of the audit chain: Ed25519 over (entry id, entry hash, instant).

Every few minutes, and once at shutdown, the chain's last entry is signed with the
receipt signing key (same kid as in the JWKS) into `audit_heads`, only when it
changed. A head is a promise that the chain contained that entry with that hash:
truncating the tail, or rewriting the chain and re-hashing it (even with the audit
key), breaks a promise the attacker cannot re-sign without the signing key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Iterable
from typing import Any, Protocol

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from gateway.audit import AuditLog, Verification, last_link, lock_chain
from gateway.db import Database
from gateway.models import AuditEntry, AuditHead, utcnow
from gateway.receipts.signing import ReceiptSigner, key_id
from gateway.security.keyring import load_keyring
from gateway.settings import Settings

log = structlog.get_logger(__name__)
INTERVAL_S = 300.0


def head_message(head: AuditHead) -> bytes:
    """What a head's signature covers; the instant is included so it cannot be moved."""
    signed_at = head.signed_at.isoformat(timespec="microseconds")
    return f"gateway-audit-head|{head.entry_id}|{head.entry_hash}|{signed_at}".encode()


class HeadSigner:
    """Signs heads with the receipt signing seed; the kid matches the published JWKS."""

    def __init__(self, seed: bytes) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.kid = key_id(self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadSigner:
        return cls(load_keyring(settings).signing_key)

    def sign(self, session: Session) -> AuditHead | None:
        """Sign the current head in this transaction; None when empty or already signed."""
        lock_chain(session)
        link = last_link(session)
        if link is None:
            return None
        entry_id, entry_hash = link
        latest = session.exec(
            select(AuditHead).order_by(col(AuditHead.id).desc()).limit(1)).first()
        if latest is not None and (latest.entry_id, latest.entry_hash) == link:
            return None
        head = AuditHead(entry_id=entry_id, entry_hash=entry_hash, signature="",
                         kid=self.kid, signed_at=utcnow())
        signature = self._private.sign(head_message(head))
        head.signature = base64.urlsafe_b64encode(signature).decode().rstrip("=")
        session.add(head)
        return head


def public_keys(jwks: dict[str, Any]) -> dict[str, Ed25519PublicKey]:
    """kid -> Ed25519 public key, from a JWKS such as ReceiptSigner.jwks()."""
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
            keys[jwk["kid"]] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def _signature_ok(head: AuditHead, keys: dict[str, Ed25519PublicKey]) -> bool:
    key = keys.get(head.kid)
    if key is None:
        return False
    try:
        signature = base64.urlsafe_b64decode(head.signature + "=" * (-len(head.signature) % 4))
        key.verify(signature, head_message(head))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def check_heads(heads: Iterable[AuditHead], hashes: dict[int, str],
                keys: dict[str, Ed25519PublicKey]) -> tuple[int, str] | None:
    """The lowest entry id a head contradicts, with the reason; None if all hold."""
    broken: list[tuple[int, str]] = []
    for head in heads:
        when = head.signed_at.isoformat(timespec="seconds")
        if not _signature_ok(head, keys):
            broken.append((head.entry_id, f"signed head #{head.id} of {when} has an invalid "
                                          f"signature or an unknown key {head.kid!r}"))
        elif head.entry_id not in hashes:
            broken.append((head.entry_id, f"missing: the signed head #{head.id} of {when} "
                                          "covers it (chain truncated or entry deleted)"))
        elif hashes[head.entry_id] != head.entry_hash:
            broken.append((head.entry_id, f"rewritten: its hash differs from the signed head "
                                          f"#{head.id} of {when}"))
    return min(broken) if broken else None


def verify_trail(session: Session, *, audit_log: AuditLog,
                 jwks: dict[str, Any]) -> Verification:
    """The chain (hashes, links, seals) and every signed head; the lowest broken entry wins."""
    entries = list(session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all())
    chain = audit_log.verify_entries(entries)
    heads = session.exec(select(AuditHead).order_by(col(AuditHead.id))).all()
    head_problem = check_heads(heads, {e.id: e.entry_hash for e in entries if e.id},
                               public_keys(jwks))
    if head_problem is None:
        return chain
    entry_id, problem = head_problem
    if chain.first_broken_id is not None and chain.first_broken_id <= entry_id:
        return chain
    checked = sum(1 for entry in entries if (entry.id or 0) < entry_id)
    return Verification(False, checked, entry_id, problem)


def verify_settings(settings: Settings, database: Database) -> Verification:
    """What `gateway audit verify` runs: keys from the configuration, then the whole trail."""
    keyring = load_keyring(settings)
    jwks = ReceiptSigner(keyring.signing_key, keyring.previous_signing_keys).jwks()
    audit_log = AuditLog.from_settings(settings)
    return database.read_now(lambda s: verify_trail(s, audit_log=audit_log, jwks=jwks))


class _Context(Protocol):
    settings: Settings
    db: Database


async def _sign_once(ctx: _Context, signer: HeadSigner) -> None:
    try:
        head = await ctx.db.write(signer.sign)
    except SQLAlchemyError as exc:
        log.warning("audit.head_failed", error=type(exc).__name__)
        return
    if head is not None:
        log.info("audit.head_signed", entry_id=head.entry_id, kid=head.kid)


async def run_audit_heads(ctx: _Context, stopping: asyncio.Event, *,
                          interval_s: float = INTERVAL_S) -> None:
    """Sign the head every `interval_s` while it changes, and once more at shutdown."""
    signer = HeadSigner.from_settings(ctx.settings)
    try:
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), timeout=interval_s)
            except TimeoutError:
                await _sign_once(ctx, signer)
    finally:
        await _sign_once(ctx, signer)  # also when cancelled: the lifespan gathers us
