"""Reading a pharmacy's own claims: one claim with its history, or a page of them."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from gateway.claims import repository
from gateway.claims.presenter import to_detail, to_public
from gateway.claims.schemas import ClaimDetail, ClaimPage
from gateway.context import AppContext
from gateway.errors import NotFound, ValidationFailed
from gateway.receipts import repository as receipts_repository
from gateway.security.apikeys import Principal
from gateway.storage.models import Claim, ClaimHistory, Receipt
from gateway.storage.unit import UnitOfWork


def own_claim(session: UnitOfWork, principal: Principal, claim_id: str) -> Claim:
    """The claim if it belongs to the caller's pharmacy; another's is a 404, never a 403."""
    claim = repository.get_own(session, claim_id=claim_id, finess=principal.finess or "")
    if claim is None:
        raise NotFound("no such claim")
    return claim


async def get(*, ctx: AppContext, principal: Principal, claim_id: str) -> ClaimDetail:
    def load(session: UnitOfWork) -> tuple[Claim, list[ClaimHistory], Receipt | None]:
        claim = own_claim(session, principal, claim_id)
        return (claim, repository.history(session, claim.id),
                receipts_repository.of_claim(session, claim.id))

    claim, steps, receipt = await ctx.db.read(load)
    return to_detail(claim, steps, ctx.cipher, receipt, ctx.receipts)


def encode_cursor(claim_id: str) -> str:
    return base64.urlsafe_b64encode(claim_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, prefix: str = "clm_") -> str:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    suffix = decoded[len(prefix):]
    if not decoded.startswith(prefix) or not (suffix.isascii() and suffix.isalnum()):
        raise ValidationFailed(
            "invalid cursor", errors=[{"field": "cursor", "message": "not a cursor from `next`"}]
        )
    return decoded


async def list_claims(
    *,
    ctx: AppContext,
    principal: Principal,
    status: str | None,
    operator: str | None,
    since: datetime | None,
    cursor: str | None,
    limit: int,
) -> ClaimPage:
    before_id = decode_cursor(cursor) if cursor else None
    def load(session: UnitOfWork) -> tuple[list[Claim], dict[str, Receipt]]:
        claims = repository.list_own(
            session, finess=principal.finess or "", status=status, operator=operator,
            since=since, before_id=before_id, limit=limit + 1,
        )
        return claims, receipts_repository.of_claims(session, (c.id for c in claims))

    claims, receipts = await ctx.db.read(load)
    page = claims[:limit]
    more = len(claims) > limit
    return ClaimPage(
        claims=[to_public(claim, ctx.cipher, receipts.get(claim.id), ctx.receipts)
                for claim in page],
        next=encode_cursor(page[-1].id) if more and page else None,
    )
