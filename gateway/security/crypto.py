"""Personal data at rest: AES-256-GCM with a key id in every blob, and keyed hashes.

A blob is `version(1) | key_id(4) | nonce(12) | ciphertext+tag`. The key id lets
old rows stay readable after the data key rotates. The associated data binds a
blob to its row, so a blob copied onto another row does not decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.security.keyring import KeyRing

BLOB_VERSION = 1
NONCE_BYTES = 12


class DecryptionError(Exception):
    """A blob could not be decrypted: unknown key, or altered data."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"gateway-data-key-id" + key).digest()[:4]


class Cipher:
    """Encrypts with the current data key; decrypts with any key of the ring."""

    def __init__(self, keyring: KeyRing) -> None:
        self._current_id = key_id(keyring.data_key)
        self._current = AESGCM(keyring.data_key)
        self._by_id = {
            key_id(key): AESGCM(key)
            for key in (keyring.data_key, *keyring.previous_data_keys)
        }
        self._index_key = keyring.index_key

    def encrypt(self, plaintext: bytes, *, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._current.encrypt(nonce, plaintext, context.encode())
        return bytes([BLOB_VERSION]) + self._current_id + nonce + sealed

    def decrypt(self, blob: bytes, *, context: str) -> bytes:
        if len(blob) < 1 + 4 + NONCE_BYTES + 16 or blob[0] != BLOB_VERSION:
            raise DecryptionError("unknown blob format")
        aead = self._by_id.get(blob[1:5])
        if aead is None:
            raise DecryptionError("blob encrypted with an unknown data key")
        try:
            nonce, sealed = blob[5 : 5 + NONCE_BYTES], blob[5 + NONCE_BYTES :]
            return aead.decrypt(nonce, sealed, context.encode())
        except InvalidTag as exc:
            raise DecryptionError("blob altered or bound to another record") from exc

    def encrypt_json(self, value: Any, *, context: str) -> bytes:
        return self.encrypt(json.dumps(value, separators=(",", ":")).encode(), context=context)

    def decrypt_json(self, blob: bytes, *, context: str) -> Any:
        return json.loads(self.decrypt(blob, context=context))

    def index(self, *parts: str) -> str:
        """A keyed hash for lookups: equal inputs match, the input cannot be recovered."""
        message = "\x1f".join(parts).encode()
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()
