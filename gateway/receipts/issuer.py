"""Deciding coverage for a claim that ends up queued, and issuing its signed receipt.

Runs inside the transaction that queues the claim, so the decision, its figures,
the receipt and the `receipt.issued` event commit together. On PostgreSQL a
per-pharmacy advisory lock keeps two instances from both passing the
outstanding cap; on SQLite the IMMEDIATE transaction already serialises.
"""

from __future__ import annotations

import json
import secrets
from datetime import timedelta

import structlog

from gateway.audit.trail import AuditLog
from gateway.claims import repository as claims_repository
from gateway.claims.payload import payload_context
from gateway.claims.schemas import ClaimCreate
from gateway.observability.metrics import RECEIPTS
from gateway.receipts import repository
from gateway.receipts.policy import CachedRights, Coverage, Exposure, decide
from gateway.receipts.signing import ReceiptSigner
from gateway.rights import repository as rights_repository
from gateway.security.crypto import Cipher, DecryptionError
from gateway.settings import OperatorSettings, Settings
from gateway.storage.ids import TIME_CHARS, new_ulid
from gateway.storage.models import Claim, ClaimHistory, Receipt, new_row, utcnow
from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)


def new_receipt_id() -> str:
    """rcp_ + the issue time (ULID's 10-character millisecond prefix) + 128 random bits.

    Not enumerable, by the random part. The time prefix, already printed on the receipt,
    makes each new id sort after the last: its primary-key index grows at one end,
    where a wholly random id touched a random page of it on every receipt (a 4 KiB page
    written to the WAL, then again at checkpoint).
    """
    return f"rcp_{new_ulid()[:TIME_CHARS]}{secrets.token_urlsafe(16)}"


class ReceiptIssuer:
    def __init__(self, settings: Settings, cipher: Cipher, signer: ReceiptSigner,
                 audit_log: AuditLog | None = None) -> None:
        self.settings = settings
        self.cipher = cipher
        self.signer = signer
        self.audit_log = audit_log

    def verify_url(self, receipt_id: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}/v1/receipts/{receipt_id}"

    def print_url(self, receipt_id: str) -> str:
        return f"{self.settings.public_url.rstrip('/')}/console/receipts/{receipt_id}/print"

    def cover(self, session: UnitOfWork, claim: Claim, operator: OperatorSettings,
              claim_in: ClaimCreate | None = None, *, audit: bool = True,
              step: ClaimHistory | None = None) -> Receipt | None:
        """Decide once, when the claim is first queued; store the decision and any receipt.

        The decision goes into the claim's history: appended to `step` (the history row
        just written for the claim, not yet flushed) when given, else as a row of its own.
        `audit=False`: the caller's own audit entry and log line name the receipt.
        """
        if claim.coverage_decision != "not_needed":
            return None
        if claim_in is None:
            body = self.cipher.decrypt_json(claim.payload_enc, context=payload_context(claim.id))
            claim_in = ClaimCreate.model_validate(body)
        offer = operator.provisional
        if offer != "none":  # "none" reads no exposure: nothing to keep from changing
            repository.lock_decisions(session, claim.finess, claim.nir_hash,
                                      claim.service_date)
        with session.no_autoflush:  # keep `step` pending so its detail can still grow
            coverage = self._decide(session, claim, claim_in, offer)
        claim.coverage_decision, claim.coverage_reason = coverage.decision, coverage.reason
        claim.coverage_json = json.dumps(
            {"basis": coverage.basis, "amc_cents": coverage.amc_cents,
             "patient_due_cents": coverage.patient_due_cents, "figures": coverage.figures},
            sort_keys=True)[:2000]
        session.add(claim)
        receipt = None
        if coverage.decision == "provisional":
            receipt = self._issue(session, claim, coverage, audit=audit)
            note = (f"provisional receipt {receipt.id}: {coverage.amc_cents} cents "
                    f"on {coverage.basis}")
        else:
            note = f"no provisional receipt: {coverage.reason}"
        if step is not None:
            step.detail = f"{step.detail}; {note}"[:500]
        else:
            claims_repository.add_history(session, claim, note)
        return receipt

    def _decide(self, session: UnitOfWork, claim: Claim, claim_in: ClaimCreate,
                offer: str) -> Coverage:
        return decide(
            claim_in, offer=offer, caps=self.settings.provisional,
            # only what this operator's offer needs is read: this runs on every queued claim
            rights=self._cached_rights(session, claim) if offer == "cached_rights" else None,
            # the person is their NIR: another birth date or rank is no other person
            exposure=Exposure(*repository.exposure_of_claim(
                session, claim.nir_hash, claim.service_date, claim.finess,
            )) if offer != "none" else Exposure(0, 0),
        )

    def _cached_rights(self, session: UnitOfWork, claim: Claim) -> CachedRights | None:
        """What this pharmacy learnt of the beneficiary: its own rights lookups and
        accepted claims only, never another pharmacy's."""
        since = utcnow() - timedelta(days=self.settings.provisional.rights_cache_days)
        entry = rights_repository.get(session, finess=claim.finess,
                                      beneficiary_hash=claim.beneficiary_hash,
                                      insurer_number=claim.insurer_number, not_before=since)
        answer = None
        if entry is not None:
            try:
                answer = self.cipher.decrypt_json(
                    entry.answer_enc, context=rights_repository.cache_context(
                        claim.finess, claim.beneficiary_hash, claim.insurer_number))
            except DecryptionError:  # its data key was shredded: no cached answer
                answer = None
        if answer is not None:
            return CachedRights(bool(answer["covered"]), dict(answer.get("guarantees") or {}))
        guarantees: dict[str, int] = {}
        accepted = repository.accepted_claims_of(session, claim.finess,
                                                 claim.beneficiary_hash,
                                                 claim.insurer_number, since)
        for previous in accepted:
            if previous.amc_covered_cents != previous.amc_requested_cents:
                continue  # a partial acceptance cannot be split across its lines
            try:
                body = self.cipher.decrypt_json(previous.payload_enc,
                                                context=payload_context(previous.id))
            except DecryptionError:
                continue  # purged or shredded: it no longer tells anything
            for line in body["lines"]:
                ticket = line["base_cents"] - line["amo_cents"]
                if ticket > 0:
                    percent = line["amc_cents"] * 100 // ticket
                    guarantees[line["code"]] = max(guarantees.get(line["code"], 0), percent)
        return CachedRights(True, guarantees) if accepted else None

    def _issue(self, session: UnitOfWork, claim: Claim, coverage: Coverage, *,
               audit: bool) -> Receipt:
        now = utcnow()
        expires = now + timedelta(days=self.settings.provisional.receipt_validity_days)
        receipt_id = new_receipt_id()
        token = self.signer.sign({
            "rid": receipt_id, "claim_id": claim.id, "finess": claim.finess,
            "invoice_number": claim.invoice_number, "operator": claim.operator,
            "insurer_number": claim.insurer_number, "amc_cents": coverage.amc_cents,
            "patient_due_cents": coverage.patient_due_cents, "basis": coverage.basis,
            "iat": int(now.timestamp()), "exp": int(expires.timestamp()),
            "iss": self.settings.public_url,
        })
        receipt = new_row(
            Receipt,
            id=receipt_id, claim_id=claim.id, finess=claim.finess, operator=claim.operator,
            insurer_number=claim.insurer_number, invoice_number=claim.invoice_number,
            beneficiary_hash=claim.nir_hash, service_date=claim.service_date,
            amc_cents=coverage.amc_cents, patient_due_cents=coverage.patient_due_cents,
            basis=coverage.basis or "", status=repository.OPEN, kid=self.signer.kid,
            token=token, issued_at=now, expires_at=expires, updated_at=now,
        )
        session.add(receipt)
        claims_repository.add_event(session, finess=claim.finess, type_="receipt.issued",
                                    claim_id=claim.id, at=now)
        if audit:  # else the caller's audit entry and log line name the receipt
            if self.audit_log is not None:
                self.audit_log.system(session, "receipt.issue", object_id=receipt_id,
                                      claim_id=claim.id, basis=coverage.basis,
                                      amc_cents=coverage.amc_cents)
            log.info("receipt.issued", receipt_id=receipt_id, claim_id=claim.id)
        RECEIPTS.labels(claim.operator, coverage.basis or "").inc()
        return receipt


