"""Claim rows to public schemas: decrypts only to mask, never returns personal data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.claims.payload import payload_context
from gateway.claims.schemas import ClaimDetail, ClaimPublic, Coverage, HistoryItem, Rejection
from gateway.security.crypto import Cipher, DecryptionError
from gateway.storage.models import Claim, ClaimHistory, Receipt

if TYPE_CHECKING:
    from gateway.receipts.issuer import ReceiptIssuer


NO_PERSONAL_DATA = "—"  # purged by retention, or its data key shredded


def mask_nir(nir: str) -> str:
    """Sex, birth year and month stay readable at the counter; the rest is hidden."""
    return nir[:5] + "*" * (len(nir) - 5)


def masked_nir_of(claim: Claim, cipher: Cipher) -> str:
    """The masked NIR, or a dash once the claim's personal data is gone."""
    if claim.purged_at is not None:
        return NO_PERSONAL_DATA
    try:
        payload = cipher.decrypt_json(claim.payload_enc, context=payload_context(claim.id))
    except DecryptionError:
        return NO_PERSONAL_DATA
    return mask_nir(payload["beneficiary"]["nir"])


def receipt_summary(receipt: Receipt, issuer: ReceiptIssuer) -> dict[str, object]:
    return {
        "id": receipt.id, "token": receipt.token, "status": receipt.status,
        "amc_cents": receipt.amc_cents, "patient_due_cents": receipt.patient_due_cents,
        "basis": receipt.basis, "expires_at": receipt.expires_at.isoformat(),
        "verify_url": issuer.verify_url(receipt.id), "print_url": issuer.print_url(receipt.id),
    }


def to_public(
    claim: Claim, cipher: Cipher, receipt: Receipt | None = None,
    issuer: ReceiptIssuer | None = None, *, nir: str | None = None,
) -> ClaimPublic:
    """`nir`: the submitted one, when at hand, spares decrypting the payload to mask it."""
    return ClaimPublic(
        id=claim.id,
        status=claim.status,  # type: ignore[arg-type]  # stored as a ClaimStatus
        operator=claim.operator,
        invoice_number=claim.invoice_number,
        service_date=claim.service_date,
        insurer_number=claim.insurer_number,
        nir_masked=mask_nir(nir) if nir is not None else masked_nir_of(claim, cipher),
        amc_requested_cents=claim.amc_requested_cents,
        amc_covered_cents=claim.amc_covered_cents,
        rejection=(
            Rejection(code=claim.rejection_code, label=claim.rejection_label or "")
            if claim.rejection_code else None
        ),
        operator_reference=claim.operator_reference,
        cancellation_pending=claim.cancellation_pending,
        coverage=Coverage(
            decision=claim.coverage_decision,  # type: ignore[arg-type]  # stored as one of them
            reason=claim.coverage_reason,
            receipt=receipt_summary(receipt, issuer) if receipt and issuer else None,
        ),
        created_at=claim.created_at,
        updated_at=claim.updated_at,
    )


def to_detail(
    claim: Claim, steps: list[ClaimHistory], cipher: Cipher, receipt: Receipt | None = None,
    issuer: ReceiptIssuer | None = None,
) -> ClaimDetail:
    return ClaimDetail(
        **to_public(claim, cipher, receipt, issuer).model_dump(),
        history=[HistoryItem(status=s.status, at=s.at, detail=s.detail) for s in steps],
    )
