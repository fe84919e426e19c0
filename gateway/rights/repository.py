"""The rights cache: one encrypted answer per beneficiary and insurer."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, col, select

from gateway.models import RightsCacheEntry


def get(
    session: Session, *, beneficiary_hash: str, insurer_number: str, not_before: datetime
) -> RightsCacheEntry | None:
    result = session.exec(
        select(RightsCacheEntry).where(
            col(RightsCacheEntry.beneficiary_hash) == beneficiary_hash,
            col(RightsCacheEntry.insurer_number) == insurer_number,
            col(RightsCacheEntry.as_of) >= not_before,
        )
    )
    return result.first()


def put(
    session: Session, *, beneficiary_hash: str, insurer_number: str,
    answer_enc: bytes, as_of: datetime,
) -> None:
    result = session.exec(
        select(RightsCacheEntry).where(
            col(RightsCacheEntry.beneficiary_hash) == beneficiary_hash,
            col(RightsCacheEntry.insurer_number) == insurer_number,
        )
    )
    entry = result.first() or RightsCacheEntry(
        beneficiary_hash=beneficiary_hash, insurer_number=insurer_number,
        answer_enc=answer_enc, as_of=as_of,
    )
    entry.answer_enc, entry.as_of = answer_enc, as_of
    session.add(entry)
