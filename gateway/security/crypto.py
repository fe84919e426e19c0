"""Personal data at rest: AES-256-GCM blobs that name their key, and keyed hashes.

Two blob formats:
- version 1, the master key directly: `1 | key_id(4) | nonce(12) | ciphertext+tag`
  (data written before envelope encryption; still read);
- version 2, envelope: `2 | len(1) | dek_id | nonce(12) | ciphertext+tag`, encrypted
  with the data key (DEK) of a scope, which the `DataKeyStore` unwraps with the master.

The associated data binds a blob to its row (the `context`), so a blob copied onto
another row does not decrypt; version 2 also binds its header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.security.keyring import KeyRing

BLOB_VERSION = 1  # master key directly
ENVELOPE_VERSION = 2  # a scope's data key
NONCE_BYTES = 12
TAG_BYTES = 16


class DataKeys(Protocol):
    """Where the data keys (DEKs) of scopes live: `security.envelope.DataKeyStore`."""

    def key_for_scope(self, scope: str) -> tuple[str, AESGCM]:
        """The scope's current DEK (made on first use): its id and cipher."""
        ...

    def key(self, dek_id: str) -> AESGCM:
        """The DEK an envelope names; DecryptionError once shredded or unknown."""
        ...

    def forget(self, dek_ids: Iterable[str]) -> None:
        """Drop shredded DEKs from any cache."""
        ...


class DecryptionError(Exception):
    """A blob could not be decrypted: unknown or shredded key, purged or altered data."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"gateway-data-key-id" + key).digest()[:4]


def _open(aead: AESGCM, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    try:
        return aead.decrypt(nonce, sealed, aad)
    except InvalidTag as exc:
        raise DecryptionError("blob altered or bound to another record") from exc


class Cipher:
    """Encrypts with a scope's data key (or the master key without a scope); decrypts both."""

    def __init__(self, keyring: KeyRing, store: DataKeys | None = None) -> None:
        self._current_id = key_id(keyring.data_key)
        self._current = AESGCM(keyring.data_key)
        self._by_id = {
            key_id(key): AESGCM(key)
            for key in (keyring.data_key, *keyring.previous_data_keys)
        }
        self._index_key = keyring.index_key
        self.store = store

    def encrypt(self, plaintext: bytes, *, context: str, scope: str | None = None) -> bytes:
        """With a scope (and a store): under that scope's DEK; else under the master key."""
        nonce = os.urandom(NONCE_BYTES)
        if scope is None or self.store is None:
            sealed = self._current.encrypt(nonce, plaintext, context.encode())
            return bytes([BLOB_VERSION]) + self._current_id + nonce + sealed
        dek_id, aead = self.store.key_for_scope(scope)
        name = dek_id.encode("ascii")
        header = bytes([ENVELOPE_VERSION, len(name)]) + name
        return header + nonce + aead.encrypt(nonce, plaintext, header + context.encode())

    def decrypt(self, blob: bytes, *, context: str) -> bytes:
        if not blob:
            raise DecryptionError("no data: purged")
        if blob[0] == BLOB_VERSION and len(blob) >= 1 + 4 + NONCE_BYTES + TAG_BYTES:
            aead = self._by_id.get(blob[1:5])
            if aead is None:
                raise DecryptionError("blob encrypted with an unknown data key")
            body = blob[5:]
            return _open(aead, body[:NONCE_BYTES], body[NONCE_BYTES:], context.encode())
        dek_id = self.data_key_of(blob)
        if dek_id is None:
            raise DecryptionError("unknown blob format")
        if self.store is None:
            raise DecryptionError("an envelope blob, but no data key store")
        header_len = 2 + blob[1]
        body = blob[header_len:]
        aead = self.store.key(dek_id)
        return _open(aead, body[:NONCE_BYTES], body[NONCE_BYTES:],
                     blob[:header_len] + context.encode())

    def on_current_master(self, blob: bytes) -> bool:
        """A version 1 blob under the current master key (nothing to re-encrypt after a
        master rotation)."""
        return blob[:1] == bytes([BLOB_VERSION]) and blob[1:5] == self._current_id

    @staticmethod
    def data_key_of(blob: bytes) -> str | None:
        """The DEK an envelope blob names; None for a master-key or malformed blob."""
        if len(blob) < 2 or blob[0] != ENVELOPE_VERSION:
            return None
        end = 2 + blob[1]
        if blob[1] == 0 or len(blob) < end + NONCE_BYTES + TAG_BYTES:
            return None
        try:
            return blob[2:end].decode("ascii")
        except UnicodeDecodeError:
            return None

    def forget(self, dek_ids: Iterable[str]) -> None:
        """Drop shredded DEKs from the in-memory cache."""
        if self.store is not None:
            self.store.forget(dek_ids)

    def encrypt_json(self, value: Any, *, context: str, scope: str | None = None) -> bytes:
        plaintext = json.dumps(value, separators=(",", ":")).encode()
        return self.encrypt(plaintext, context=context, scope=scope)

    def decrypt_json(self, blob: bytes, *, context: str) -> Any:
        return json.loads(self.decrypt(blob, context=context))

    def index(self, *parts: str) -> str:
        """A keyed hash for lookups: equal inputs match, the input cannot be recovered."""
        message = "\x1f".join(parts).encode()
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()
