"""Receipt ids: not enumerable (128 random bits), and in issue order (time prefix)."""

from __future__ import annotations

import base64
import time

from gateway.receipts.issuer import new_receipt_id


def test_a_later_receipt_id_sorts_after_an_earlier_one() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_receipt_id())
        time.sleep(0.002)  # the time prefix counts milliseconds
    assert ids == sorted(ids)


def test_each_id_carries_128_random_bits() -> None:
    ids = {new_receipt_id() for _ in range(1000)}
    assert len(ids) == 1000
    for receipt_id in ids:
        assert receipt_id.startswith("rcp_") and len(receipt_id) == 36 <= 40  # the column
        random_part = receipt_id[14:]
        assert len(base64.urlsafe_b64decode(random_part + "==")) == 16
