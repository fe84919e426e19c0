"""Rights checks: ask the operator, remember the answer, fall back to it when it is down."""

from __future__ import annotations

from datetime import date, timedelta

import structlog
from sqlalchemy import update
from sqlmodel import Session, col

from adapters.base import OperatorRejected, OperatorUnavailable, RightsRequest
from gateway.claims.operator_texts import refusal_detail
from gateway.context import AppContext
from gateway.errors import OperatorRefused, UnknownInsurer
from gateway.models import RightsCacheEntry, utcnow
from gateway.rights import repository
from gateway.rights.schemas import RightsCheck, RightsPublic
from gateway.security.apikeys import Principal
from gateway.security.crypto import DecryptionError

log = structlog.get_logger(__name__)


def cache_context(beneficiary_hash: str, insurer_number: str) -> str:
    return f"rights:{beneficiary_hash}:{insurer_number}"


async def check(*, ctx: AppContext, request: RightsCheck, principal: Principal) -> RightsPublic:
    operator = ctx.operators.route(request.amc.insurer_number)
    if operator is None:
        raise UnknownInsurer(
            "no operator handles this insurer number",
            errors=[{"field": "amc.insurer_number", "message": "not routed to any operator"}],
        )
    beneficiary_hash = ctx.cipher.index(*request.beneficiary.index_parts)
    unusual = ctx.rights_watch.note_rights_lookup(principal.key_id, beneficiary_hash)
    insurer = request.amc.insurer_number
    context = cache_context(beneficiary_hash, insurer)
    wire = RightsRequest(body=request.model_dump(mode="json", by_alias=True))
    try:
        answer = await operator.guard.call(lambda: operator.adapter.check_rights(wire),
                                          idempotent=True)
    except OperatorUnavailable as exc:
        log.warning("rights.operator_unavailable", operator=operator.name, reason=exc.reason)
        public = await _from_cache(ctx, beneficiary_hash, insurer, context)
        await ctx.db.write(lambda session: ctx.audit_log.append(
            session, principal, "rights.lookup", object_id=operator.name,
            outcome=public.source or "unknown", unusual=unusual))
        return public
    except OperatorRejected as exc:
        await ctx.db.write(lambda session: ctx.audit_log.append(
            session, principal, "rights.lookup", object_id=operator.name,
            outcome="refused", unusual=unusual))
        raise OperatorRefused(refusal_detail(exc.code)) from None
    now = utcnow()
    public = RightsPublic(covered=answer.covered, source="operator", as_of=now,
                          valid_to=answer.valid_to, guarantees=answer.guarantees)
    plain = public.model_dump(mode="json")

    def remember(session: Session) -> None:
        # Encrypted inside the write: a new month's data key commits with the entry.
        answer_enc = ctx.cipher.encrypt_json(plain, context=context, scope=f"rights:{now:%Y-%m}")
        repository.put(session, beneficiary_hash=beneficiary_hash, insurer_number=insurer,
                       as_of=now, answer_enc=answer_enc)
        session.execute(update(RightsCacheEntry).where(
            col(RightsCacheEntry.beneficiary_hash) == beneficiary_hash,
            col(RightsCacheEntry.insurer_number) == insurer,
        ).values(data_key_id=ctx.cipher.data_key_of(answer_enc)))
        ctx.audit_log.append(session, principal, "rights.lookup", object_id=operator.name,
                             outcome="operator", unusual=unusual)

    await ctx.db.write(remember)
    return public


async def _from_cache(
    ctx: AppContext, beneficiary_hash: str, insurer: str, context: str
) -> RightsPublic:
    not_before = utcnow() - timedelta(days=ctx.settings.provisional.rights_cache_days)
    entry = await ctx.db.read(lambda session: repository.get(
        session, beneficiary_hash=beneficiary_hash, insurer_number=insurer,
        not_before=not_before,
    ))
    if entry is None:
        return RightsPublic(covered=None, source=None, as_of=None, valid_to=None, guarantees={})
    try:
        cached = ctx.cipher.decrypt_json(entry.answer_enc, context=context)
    except DecryptionError:  # its data key was shredded: as good as no entry
        return RightsPublic(covered=None, source=None, as_of=None, valid_to=None, guarantees={})
    valid_to = cached.get("valid_to")
    return RightsPublic(
        covered=cached["covered"], source="cache", as_of=entry.as_of,
        valid_to=date.fromisoformat(valid_to) if valid_to else None,
        guarantees=cached.get("guarantees", {}),
    )
