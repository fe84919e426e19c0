"""Rights checks: ask the operator, remember the answer, fall back to it when it is down."""

from __future__ import annotations

from datetime import date, timedelta

import structlog

from adapters.base import OperatorRejected, OperatorUnavailable, RightsRequest
from gateway.context import AppContext
from gateway.errors import OperatorRefused, UnknownInsurer
from gateway.models import utcnow
from gateway.rights import repository
from gateway.rights.schemas import RightsCheck, RightsPublic

log = structlog.get_logger(__name__)


def cache_context(beneficiary_hash: str, insurer_number: str) -> str:
    return f"rights:{beneficiary_hash}:{insurer_number}"


async def check(*, ctx: AppContext, request: RightsCheck) -> RightsPublic:
    operator = ctx.operators.route(request.amc.insurer_number)
    if operator is None:
        raise UnknownInsurer(
            "no operator handles this insurer number",
            errors=[{"field": "amc.insurer_number", "message": "not routed to any operator"}],
        )
    person = request.beneficiary
    beneficiary_hash = ctx.cipher.index(
        "beneficiary", person.nir, person.birth_date.isoformat(), str(person.birth_rank)
    )
    insurer = request.amc.insurer_number
    context = cache_context(beneficiary_hash, insurer)
    wire = RightsRequest(body=request.model_dump(mode="json", by_alias=True))
    try:
        answer = await operator.guard.call(lambda: operator.adapter.check_rights(wire),
                                          idempotent=True)
    except OperatorUnavailable as exc:
        log.warning("rights.operator_unavailable", operator=operator.name, reason=exc.reason)
        return await _from_cache(ctx, beneficiary_hash, insurer, context)
    except OperatorRejected as exc:
        raise OperatorRefused(f"operator refused the rights request: {exc.code}") from None
    now = utcnow()
    public = RightsPublic(covered=answer.covered, source="operator", as_of=now,
                          valid_to=answer.valid_to, guarantees=answer.guarantees)
    answer_enc = ctx.cipher.encrypt_json(public.model_dump(mode="json"), context=context)
    await ctx.db.write(lambda session: repository.put(
        session, beneficiary_hash=beneficiary_hash, insurer_number=insurer, as_of=now,
        answer_enc=answer_enc,
    ))
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
    cached = ctx.cipher.decrypt_json(entry.answer_enc, context=context)
    valid_to = cached.get("valid_to")
    return RightsPublic(
        covered=cached["covered"], source="cache", as_of=entry.as_of,
        valid_to=date.fromisoformat(valid_to) if valid_to else None,
        guarantees=cached.get("guarantees", {}),
    )
