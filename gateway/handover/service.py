"""The hand-over verbs: export a batch, write its file again, import acknowledgements,
release a batch. The API, the console and the command line share them.

Guarantees (docs/handover.md): a claim is exported only from `queued`, in the
transaction that records the batch, so it is never both in a file and leased by the
drain; the file is made from the database after that commit (a crash before it is
written loses nothing: write it again, or release the batch); an acknowledgement
settles claims through `transitions.settle`, as an online answer does (receipts,
events, webhooks), all of its lines or none of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import anyio.to_thread

from adapters.base import ClaimOutcome
from adapters.batch_files import (
    MAX_BATCH_BYTES,
    Acks,
    BadFile,
    Batch,
    BatchClaim,
    batch_content,
    line_bytes,
    read_acks,
)
from gateway.audit.trail import AuditLog
from gateway.claims import repository as claims_repository
from gateway.claims import transitions
from gateway.claims.payload import payload_context
from gateway.claims.service import EXPORTED, wire_claim
from gateway.errors import Conflict, GatewayError, NotFound
from gateway.handover import repository
from gateway.handover.sealing import UnverifiedFile, seal_batch, verify_acks
from gateway.receipts.signing import ReceiptSigner
from gateway.security.apikeys import Principal
from gateway.security.crypto import Cipher, DecryptionError
from gateway.settings import OperatorSettings, Settings
from gateway.storage.db import Database
from gateway.storage.ids import new_ulid
from gateway.storage.models import Claim, HandoverBatch, utcnow
from gateway.storage.unit import UnitOfWork

if TYPE_CHECKING:
    from gateway.context import AppContext

_HEADER_BYTES = 1024  # a batch's header line, at most


class HandoverNotConfigured(Conflict):
    type, title = "handover-not-configured", "This operator has no hand-over keys configured"


class NothingToExport(Conflict):
    type, title = "nothing-to-export", "No claim of this operator is queued"


class BatchClosed(Conflict):
    type, title = "batch-closed", "The batch is acknowledged or released already"


class AcksRefused(GatewayError):
    status, type, title = 422, "acknowledgement-refused", "The acknowledgement file is refused"


@dataclass(frozen=True, slots=True)
class Imported:
    batch_id: str
    accepted: int
    rejected: int
    left: int  # claims of the batch still awaiting an acknowledgement


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _nobody_to_wake(operator: str) -> None:
    """The command line runs no drain."""


@dataclass(frozen=True, slots=True)
class Handover:
    """The hand-over verbs over one database, cipher, signing key and audit trail."""

    settings: Settings
    db: Database
    cipher: Cipher
    signer: ReceiptSigner
    audit_log: AuditLog
    wake: Callable[[str], None] = _nobody_to_wake

    @classmethod
    def of(cls, ctx: AppContext) -> Handover:
        def wake(operator: str) -> None:
            if (worker := ctx.drains.get(operator)) is not None:
                worker.wake.set()
        return cls(ctx.settings, ctx.db, ctx.cipher, ctx.receipts.signer, ctx.audit_log, wake)

    def _operator(self, name: str) -> OperatorSettings:
        operator = self.settings.operator(name)
        if operator is None:
            raise NotFound(f"no operator {name!r}")
        if not operator.hands_over:
            raise HandoverNotConfigured(
                f"set operators.handover_encryption_key and handover_ack_key for {name!r}")
        return operator

    async def export(self, name: str, *, actor: Principal,
                     max_claims: int | None = None) -> tuple[HandoverBatch, str]:
        """Take the operator's oldest queued claims out of the live queue into a new batch
        (committed first), then make its file: (the batch, the file's text)."""
        operator = self._operator(name)
        limit = min(max_claims or operator.handover_max_claims, operator.handover_max_claims)
        batch, content = await self.db.write(lambda s: self._export(s, name, actor, limit))
        # signing and encrypting megabytes takes a while: off the event loop
        return batch, await anyio.to_thread.run_sync(partial(
            seal_batch, content, signer=self.signer,
            recipient=operator.handover_encryption_key))

    def _export(self, session: UnitOfWork, name: str, actor: Principal,
                limit: int) -> tuple[HandoverBatch, bytes]:
        now, batch_id = utcnow(), f"bat_{new_ulid()}"
        chosen: list[Claim] = []
        lines: list[BatchClaim] = []
        size = _HEADER_BYTES
        for claim in repository.oldest_queued(session, name, limit):
            try:
                body = self.cipher.decrypt_json(claim.payload_enc,
                                                context=payload_context(claim.id))
            except DecryptionError:
                continue  # left queued: the drain fails it, naming the reason
            line = BatchClaim(claim.id, wire_claim(claim.id, body).body)
            size += line_bytes(line)
            if size > MAX_BATCH_BYTES:
                break  # left queued, for the next batch: the file stays within bounds
            chosen.append(claim)
            lines.append(line)
        if not chosen:
            raise NothingToExport(f"no claim of {name!r} is queued")
        ids = [claim.id for claim in chosen]
        if repository.take(session, ids, status=EXPORTED, now=now) != len(ids):
            raise RuntimeError("a locked queued claim moved")  # the lock forbids it
        for claim in chosen:
            claim.status, claim.updated_at = EXPORTED, now
            claims_repository.add_step(session, claim, EXPORTED,
                                       f"exported in batch {batch_id}", changed=True)
        content = batch_content(Batch(batch_id, name, now.isoformat(), lines))
        batch = HandoverBatch(id=batch_id, operator=name, state=EXPORTED, count=len(ids),
                              digest=_digest(content), created_at=now,
                              created_by=actor.key_id)
        repository.add_batch(session, batch, ids)
        self.audit_log.append(session, actor, "handover.export", object_id=batch_id,
                              operator=name, count=len(ids))
        return batch, content

    async def file_of(self, name: str, batch_id: str, *, actor: Principal) -> str:
        """The batch's file made again from the database (lost, or never written after a
        crash): the same signed content, checked against the digest taken at export.
        Audited before it is handed out: it carries the claims' personal data again."""
        operator = self._operator(name)

        def load(session: UnitOfWork) -> tuple[HandoverBatch, list[tuple[str, bytes]]]:
            batch = self._open_batch(session, name, batch_id)
            return batch, [(c.id, c.payload_enc) for c in repository.claims_of(session, batch_id)]

        def remake(batch: HandoverBatch, rows: list[tuple[str, bytes]]) -> str:
            try:
                lines = [BatchClaim(claim_id, wire_claim(claim_id, self.cipher.decrypt_json(
                    payload, context=payload_context(claim_id))).body)
                    for claim_id, payload in rows]
            except DecryptionError as exc:
                raise Conflict(f"batch {batch_id} can no longer be read: release it") from exc
            content = batch_content(Batch(batch.id, name, batch.created_at.isoformat(), lines))
            if _digest(content) != batch.digest:
                raise Conflict(
                    f"batch {batch_id} no longer matches what was exported: release it")
            return seal_batch(content, signer=self.signer,
                              recipient=operator.handover_encryption_key)

        batch, rows = await self.db.read(load)
        # decrypting every claim, then signing and encrypting: off the event loop
        text = await anyio.to_thread.run_sync(remake, batch, rows)
        await self.db.write(lambda s: self.audit_log.append(
            s, actor, "handover.export_again", object_id=batch_id, operator=name,
            count=len(rows)))
        return text

    @staticmethod
    def _open_batch(session: UnitOfWork, name: str, batch_id: str, *,
                    for_update: bool = False) -> HandoverBatch:
        batch = repository.batch(session, batch_id, for_update=for_update)
        if batch is None or batch.operator != name:
            raise NotFound(f"no batch {batch_id!r} of {name!r}")
        if batch.state != EXPORTED:
            raise BatchClosed(f"batch {batch_id} is {batch.state}")
        return batch

    async def import_acks(self, name: str, text: str, *, actor: Principal) -> Imported:
        """Settle the claims an acknowledgement file answers, all or none; a refusal is
        audited and lists every problem (AcksRefused)."""
        operator = self._operator(name)
        try:
            content = verify_acks(text, ack_key=operator.handover_ack_key)
            acks = read_acks(content)
            if acks.operator != name:
                raise BadFile([f"line 1: written for operator {acks.operator!r}, not {name!r}"])
            return await self.db.write(
                lambda s: self._settle(s, name, acks, _digest(content), actor))
        except UnverifiedFile as exc:
            problems = [str(exc)]
        except BadFile as exc:
            problems = exc.problems
        except AcksRefused as exc:
            problems = [error["message"] for error in exc.errors or []]
        await self.db.write(lambda s: self.audit_log.append(
            s, actor, "handover.import", object_id=name, outcome="refused",
            problems=len(problems)))
        raise AcksRefused(f"nothing was changed: {len(problems)} problem(s)", errors=[
            {"field": "acknowledgement", "message": problem} for problem in problems])

    def _settle(self, session: UnitOfWork, name: str, acks: Acks, digest: str,
                actor: Principal) -> Imported:
        batch = repository.batch(session, acks.batch_id, for_update=True)
        if batch is None or batch.operator != name:
            raise AcksRefused(errors=[{"field": "acknowledgement", "message":
                              f"line 1: no batch {acks.batch_id} of {name!r}"}])
        if batch.acks_digest == digest:
            raise AcksRefused(errors=[{"field": "acknowledgement", "message":
                              "this acknowledgement file was already imported"}])
        if batch.state != EXPORTED:
            raise AcksRefused(errors=[{"field": "acknowledgement", "message":
                              f"line 1: batch {batch.id} is {batch.state}"}])
        claims = {c.id: c for c in repository.claims_of(session, batch.id, for_update=True)}
        problems = []
        for answer in acks.answers:
            claim = claims.get(answer.claim_id)
            where = f"line {answer.line} ({answer.claim_id})"
            if claim is None:
                problems.append(f"{where}: not a claim of batch {batch.id}")
            elif claim.status != EXPORTED:
                problems.append(f"{where}: is {claim.status}, not awaiting an acknowledgement")
            elif answer.amc_cents is not None and answer.amc_cents > claim.amc_requested_cents:
                problems.append(f"{where}: amc_cents is more than the claim asked for")
        if problems:
            raise AcksRefused(errors=[{"field": "acknowledgement", "message": p}
                                      for p in problems])
        for answer in acks.answers:
            claim = claims[answer.claim_id]
            transitions.settle(session, claim, ClaimOutcome(
                status=answer.status, reference=answer.reference, amc_cents=answer.amc_cents,
                code=answer.code))
            claims_repository.add_history(session, claim, f"acknowledged in batch {batch.id}")
        left = sum(1 for claim in claims.values() if claim.status == EXPORTED)
        batch.settled += len(acks.answers)
        batch.acks_digest = digest
        if left == 0:
            self._close(batch, "acknowledged", actor, utcnow())
        session.add(batch)
        accepted = sum(1 for answer in acks.answers if answer.status == "accepted")
        self.audit_log.append(session, actor, "handover.import", object_id=batch.id,
                              operator=name, accepted=accepted,
                              rejected=len(acks.answers) - accepted, left=left)
        return Imported(batch.id, accepted, len(acks.answers) - accepted, left)

    @staticmethod
    def _close(batch: HandoverBatch, state: str, actor: Principal, now: datetime) -> None:
        batch.state, batch.closed_at, batch.closed_by = state, now, actor.key_id

    async def release(self, name: str, batch_id: str, *, actor: Principal) -> int:
        """Put the batch's claims not yet acknowledged back in the queue, where they were
        (oldest first), marked to be looked up at the operator before any resend; how many."""
        def release(session: UnitOfWork) -> int:
            batch = self._open_batch(session, name, batch_id, for_update=True)
            claims = repository.claims_of(session, batch_id, status=EXPORTED, for_update=True)
            for claim in claims:
                transitions.enqueue(session, claim, f"released from batch {batch_id}",
                                    maybe_sent=True)
            self._close(batch, "released", actor, utcnow())
            session.add(batch)
            self.audit_log.append(session, actor, "handover.release", object_id=batch_id,
                                  operator=name, count=len(claims))
            return len(claims)

        if self.settings.operator(name) is None:
            raise NotFound(f"no operator {name!r}")
        count = await self.db.write(release)
        self.wake(name)
        return count

    async def batches(self, name: str, *, limit: int = 50) -> list[tuple[HandoverBatch, int]]:
        """The operator's latest batches, newest first, each with its claims still exported."""
        def load(session: UnitOfWork) -> list[tuple[HandoverBatch, int]]:
            return [(batch, repository.count_in(session, batch.id, EXPORTED)
                     if batch.state == EXPORTED else 0)
                    for batch in repository.batches(session, name, limit)]
        return await self.db.read(load)
