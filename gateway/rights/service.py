"""Rights checks: within the lookup budgets, ask the operator, remember the answer for this
pharmacy, and fall back to this pharmacy's remembered answer when the operator is down."""

from __future__ import annotations

from datetime import date, timedelta

import structlog

from adapters.base import OperatorRejected, OperatorUnavailable, RightsRequest
from gateway.claims.operator_texts import refusal_detail
from gateway.context import AppContext
from gateway.errors import OperatorRefused, UnknownInsurer
from gateway.rights import repository
from gateway.rights.schemas import RightsCheck, RightsPublic
from gateway.security import abuse
from gateway.security.apikeys import Principal
from gateway.security.crypto import DecryptionError
from gateway.storage.models import utcnow
from gateway.storage.unit import UnitOfWork

log = structlog.get_logger(__name__)


async def check(*, ctx: AppContext, request: RightsCheck, principal: Principal) -> RightsPublic:
    operator = ctx.operators.route(request.amc.insurer_number)
    if operator is None:
        raise UnknownInsurer(
            "no operator handles this insurer number",
            errors=[{"field": "amc.insurer_number", "message": "not routed to any operator"}],
        )
    await _charge(ctx, principal, ctx.cipher.index("nir", request.beneficiary.nir),
                  operator.name)
    finess = principal.finess or ""
    beneficiary_hash = ctx.cipher.index(*request.beneficiary.index_parts)
    insurer = request.amc.insurer_number
    context = repository.cache_context(finess, beneficiary_hash, insurer)
    wire = RightsRequest(body=request.model_dump(mode="json", by_alias=True))
    try:
        answer = await operator.guard.call(lambda: operator.adapter.check_rights(wire),
                                          idempotent=True)
    except OperatorUnavailable as exc:
        log.warning("rights.operator_unavailable", operator=operator.name, reason=exc.reason)
        public = await _from_cache(ctx, finess, beneficiary_hash, insurer, context)
        await ctx.db.write(lambda session: ctx.audit_log.append(
            session, principal, "rights.lookup", object_id=operator.name,
            outcome=public.source or "unknown"))
        return public
    except OperatorRejected as exc:
        await ctx.db.write(lambda session: ctx.audit_log.append(
            session, principal, "rights.lookup", object_id=operator.name,
            outcome="refused"))
        raise OperatorRefused(refusal_detail(exc.code)) from None
    now = utcnow()
    public = RightsPublic(covered=answer.covered, source="operator", as_of=now,
                          valid_to=answer.valid_to, guarantees=answer.guarantees)
    plain = public.model_dump(mode="json")

    def remember(session: UnitOfWork) -> None:
        # Encrypted inside the write: a new month's data key commits with the entry.
        answer_enc = ctx.cipher.encrypt_json(plain, context=context, scope=f"rights:{now:%Y-%m}")
        repository.put(session, finess=finess, beneficiary_hash=beneficiary_hash,
                       insurer_number=insurer, as_of=now, answer_enc=answer_enc,
                       data_key_id=ctx.cipher.data_key_of(answer_enc))
        ctx.audit_log.append(session, principal, "rights.lookup", object_id=operator.name,
                             outcome="operator")

    await ctx.db.write(remember)
    return public


async def _charge(ctx: AppContext, principal: Principal, nir_hash: str, operator: str) -> None:
    """Count the person in the budgets; over one, the lookup stops here (429, audited)."""
    def charge(session: UnitOfWork) -> abuse.Refusal | None:
        refusal = abuse.admit(session, principal=principal, subject=nir_hash,
                              limits=ctx.settings.limits, credentials=ctx.credentials,
                              audit_log=ctx.audit_log)
        if refusal is not None:
            ctx.audit_log.append(session, principal, "rights.lookup", object_id=operator,
                                 outcome="over_budget")
        return refusal

    refusal = await ctx.db.write(charge)
    if refusal is not None:
        raise abuse.refuse(principal, refusal)


async def _from_cache(
    ctx: AppContext, finess: str, beneficiary_hash: str, insurer: str, context: str
) -> RightsPublic:
    """This pharmacy's remembered answer; for a person it never looked up, nothing,
    whatever other pharmacies looked up."""
    not_before = utcnow() - timedelta(days=ctx.settings.provisional.rights_cache_days)
    entry = await ctx.db.read(lambda session: repository.get(
        session, finess=finess, beneficiary_hash=beneficiary_hash, insurer_number=insurer,
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
