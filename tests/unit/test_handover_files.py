"""The hand-over files' formats and keys (docs/handover.md), without a database."""

from __future__ import annotations

import json

import pytest
from handover_support import handover_config, operator_keys, public
from joserfc.jwk import ECKey, OKPKey, RSAKey
from operator_settings import operator_config
from pydantic import ValidationError

from adapters.batch_files import (
    Ack,
    Acks,
    BadFile,
    Batch,
    BatchClaim,
    ack_content,
    batch_content,
    open_batch,
    read_acks,
    read_batch,
)
from gateway.handover.sealing import UnverifiedFile, seal_batch, verify_acks
from gateway.receipts.signing import InvalidReceipt, ReceiptSigner, verify
from gateway.settings import OperatorSettings

BATCH = "bat_01M94G3X7QBANPCZKT08K7ACY5"
CLAIM = "clm_01M94G3N" + "0" * 18


def lines(acks: Acks) -> list[dict]:
    return [json.loads(line) for line in ack_content(acks).decode().splitlines()]


def content(*items: dict) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def test_a_batch_is_signed_by_the_gateway_and_opened_by_the_operator_only() -> None:
    signer = ReceiptSigner(b"\x01" * 32)
    encryption, _ = operator_keys()
    batch = Batch(BATCH, "opera", "2026-12-06T01:40:02+00:00",
                  [BatchClaim(CLAIM, {"claim_id": CLAIM, "lines": []})])
    sealed = seal_batch(batch_content(batch), signer=signer, recipient=public(encryption))
    assert open_batch(sealed, decryption_key=encryption, gateway_jwks=signer.jwks()) == batch
    other = ReceiptSigner(b"\x02" * 32)
    with pytest.raises(BadFile, match="does not publish"):
        open_batch(sealed, decryption_key=encryption, gateway_jwks=other.jwks())
    stranger = OKPKey.generate_key("X25519").as_dict(private=True)
    with pytest.raises(BadFile, match="cannot be decrypted"):
        open_batch(sealed, decryption_key=stranger, gateway_jwks=signer.jwks())
    # the inner JWS is no receipt: the same key signs both, the typ tells them apart
    inner = signer.sign_document(batch_content(batch), typ="tp-batch+jws")
    with pytest.raises(InvalidReceipt, match="not a receipt"):
        verify(inner, signer.jwks())
    with pytest.raises(UnverifiedFile, match="not a tp-batch-ack"):
        verify_acks(inner, ack_key=public(operator_keys()[1]))


def test_a_batch_whose_lines_do_not_add_up_is_refused() -> None:
    header = {"type": "batch", "format": "tp-batch/1", "batch_id": BATCH, "count": 2}
    claim = {"type": "claim", "claim_id": CLAIM, "idempotency_key": CLAIM, "body": {}}
    assert len(read_batch(content({**header, "count": 1}, claim)).claims) == 1
    with pytest.raises(BadFile, match="count 2 but 1 claims"):
        read_batch(content(header, claim))
    with pytest.raises(BadFile, match="not a claim line"):
        read_batch(content({**header, "count": 1}, {**claim, "idempotency_key": "other"}))
    with pytest.raises(BadFile, match="cut short"):
        read_batch(content({**header, "count": 1}, claim)[:-1])


def test_every_bad_acknowledgement_line_is_reported() -> None:
    good = Acks(BATCH, "opera", "now", [Ack(CLAIM, "accepted", amc_cents=280, reference="o-1")])
    header, line = lines(good)
    assert read_acks(ack_content(good)).answers[0].amc_cents == 280
    bad_lines = [
        {**line, "amc_cents": 2.5}, {**line, "amc_cents": True}, {**line, "amc_cents": -1},
        {**line, "reference": "<script>"}, {**line, "extra": 1},
        {**line, "claim_id": "clm_x"}, {**line, "batch_id": "bat_" + "1" * 26},
        {"claim_id": CLAIM, "batch_id": BATCH, "status": "rejected", "code": "R 02"},
        {"claim_id": CLAIM, "batch_id": BATCH, "status": "lost"}, ["not", "an", "object"],
    ]
    with pytest.raises(BadFile) as refused:
        read_acks(content({**header, "count": len(bad_lines)}, *bad_lines))
    assert len(refused.value.problems) == len(bad_lines)
    assert all(problem.startswith("line ") for problem in refused.value.problems)
    with pytest.raises(BadFile, match="duplicated"):
        read_acks(content({**header, "count": 2}, line, line))
    with pytest.raises(BadFile, match="no claim answered"):
        read_acks(content({**header, "count": 0}))


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # the 1024-bit key
def test_only_public_keys_of_the_listed_kinds_are_configured() -> None:
    assert OperatorSettings(**operator_config("opera", ["80*"], **handover_config())).hands_over
    assert not OperatorSettings(**operator_config("opera", ["80*"])).hands_over
    cases = {
        "a private key": {"handover_encryption_key": operator_keys()[0]},
        "unusable key type": {"handover_encryption_key": public(operator_keys()[1])},
        "unusable key type ": {"handover_ack_key": public(operator_keys()[0])},
        "not a valid public JWK": {"handover_ack_key": {"kty": "OKP", "crv": "Ed25519",
                                                         "x": "short"}},
        "at least 2048 bits": {"handover_encryption_key": RSAKey.generate_key(
            1024).as_dict(private=False)},
    }
    for words, keys in cases.items():
        with pytest.raises(ValidationError, match=words.strip()):
            OperatorSettings(**operator_config("opera", ["80*"], **keys))
    p256 = ECKey.generate_key("P-256").as_dict(private=False)
    assert OperatorSettings(**operator_config("opera", ["80*"], handover_encryption_key=p256,
                                              handover_ack_key=p256)).hands_over


def test_the_largest_batch_and_its_acknowledgement_round_trip() -> None:
    """handover_max_claims' default, 1000 claims: the batch (some 1.2 MB) and its
    acknowledgement are far above joserfc's default limits (a 64 KiB JWE ciphertext, a
    128,000-byte JWS payload), which refused them as "altered"."""
    from synthetic import claim_body

    from adapters.batch_files import sign_acks

    signer = ReceiptSigner(b"\x01" * 32)
    encryption, signing = operator_keys()
    ids = [f"clm_01M94G3N{n:018d}" for n in range(1000)]
    batch = Batch(BATCH, "opera", "2026-12-06T01:40:02+00:00",
                  [BatchClaim(i, {**claim_body(f"BIG{n}"), "claim_id": i})
                   for n, i in enumerate(ids)])
    sealed = seal_batch(batch_content(batch), signer=signer, recipient=public(encryption))
    assert len(sealed) > 1_000_000
    assert open_batch(sealed, decryption_key=encryption, gateway_jwks=signer.jwks()) == batch
    acks = Acks(BATCH, "opera", "2026-12-06T09:12:00+00:00",
                [Ack(i, "accepted", amc_cents=280, reference=f"opera-{n:0128d}"[:128])
                 for n, i in enumerate(ids)])
    signed = sign_acks(acks, signing_key=signing)
    assert len(signed) > 300_000
    assert read_acks(verify_acks(signed, ack_key=public(signing))).answers == [
        Ack(a.claim_id, a.status, amc_cents=280, reference=a.reference, line=n)
        for n, a in enumerate(acks.answers, start=2)]


def test_a_file_above_the_largest_batch_is_refused_as_too_large() -> None:
    from adapters.batch_files import ACK_JWS_PAYLOAD, BATCH_JWS_PAYLOAD

    signer = ReceiptSigner(b"\x01" * 32)
    encryption, signing = operator_keys()
    huge = "e30." + "A" * (BATCH_JWS_PAYLOAD * 2) + ".AAAA"
    with pytest.raises(BadFile, match="too large"):
        open_batch(f"e30.AAAA.AAAA.{huge}.AAAA", decryption_key=encryption,
                   gateway_jwks=signer.jwks())
    with pytest.raises(UnverifiedFile, match="too large"):
        verify_acks("e30." + "A" * (ACK_JWS_PAYLOAD * 2) + ".AAAA", ack_key=public(signing))


def test_a_batch_holds_at_most_ten_thousand_claims() -> None:
    config = operator_config("opera", ["80*"], **handover_config())
    assert OperatorSettings(**config, handover_max_claims=10_000).handover_max_claims == 10_000
    with pytest.raises(ValidationError, match="less than or equal to 10000"):
        OperatorSettings(**config, handover_max_claims=10_001)


@pytest.mark.parametrize("code", ["EPERM", "EOPNOTSUPP", "EXDEV"])
def test_a_batch_file_is_written_whole_where_hard_links_are_refused(
        tmp_path, monkeypatch, code) -> None:
    """FAT, exFAT, some SMB shares and FUSE file systems refuse link(): the file is then
    renamed into place, still whole, owner-only, and never over an existing one."""
    import errno
    import os
    import stat

    from gateway.handover.files import write_whole

    def no_links(source, target):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "opera-1.jwe"
    write_whole(target, "a.b.c.d.e")
    assert target.read_text() == "a.b.c.d.e\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["opera-1.jwe"]
    with pytest.raises(FileExistsError):
        write_whole(target, "other")
    assert target.read_text() == "a.b.c.d.e\n"

    def full_disk(source, target):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_whole(tmp_path / "opera-2.jwe", "a.b.c.d.e")
    assert [p.name for p in tmp_path.iterdir()] == ["opera-1.jwe"]  # nothing half-written
