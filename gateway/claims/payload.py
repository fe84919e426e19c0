"""The encryption context of a claim's payload: binds the ciphertext to its claim id.

A payload copied onto another claim's row does not decrypt there. The intake, the
drain, the receipt issuer, the presenter and re-encryption all seal or open payloads
with it, so it lives apart from each of them.
"""

from __future__ import annotations


def payload_context(claim_id: str) -> str:
    return f"claims:{claim_id}"
