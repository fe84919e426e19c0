"""Receipts: the public status (JSON or a French page), the keys, the exposure, the print page.

The public endpoints need no key, so they show no personal data, use random ids,
and are rate-limited per client address.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel

from gateway.console.access import ReceiptPrinterDep
from gateway.errors import NotFound, RateLimited, problem_responses
from gateway.receipts import repository
from gateway.receipts.pages import render_print_page, render_status_page, render_unknown_page
from gateway.receipts.views import ReceiptView
from gateway.security.proxies import client_address
from gateway.storage.models import Receipt
from gateway.web.deps import ContextDep, PharmacyDep, rate_limited

router = APIRouter(tags=["receipts"])


class ReceiptPublic(BaseModel):
    id: str
    status: str
    amc_cents: int
    patient_due_cents: int
    finess: str
    operator: str
    issued_at: str
    expires_at: str


class ExposurePublic(BaseModel):
    outstanding_cents: int
    by_operator: dict[str, int]


async def per_address_limit(request: Request, ctx: ContextDep) -> None:
    address = client_address(request)  # behind a trusted proxy: the forwarded client
    wait = await ctx.limiter.check(f"ip:{address}", "receipts")
    if wait is not None:
        raise RateLimited(f"too many receipt lookups; retry in {wait:g} s",
                          headers={"Retry-After": str(int(wait))})


def view_of(receipt: Receipt, verify_url: str) -> ReceiptView:
    return ReceiptView(
        id=receipt.id, status=receipt.status, amc_cents=receipt.amc_cents,
        patient_due_cents=receipt.patient_due_cents, finess=receipt.finess,
        operator=receipt.operator, insurer_number=receipt.insurer_number,
        invoice_number=receipt.invoice_number, service_date=receipt.service_date,
        basis=receipt.basis, issued_at=receipt.issued_at, expires_at=receipt.expires_at,
        verify_url=verify_url,
    )


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


@router.get("/v1/receipts/{receipt_id}", response_model=ReceiptPublic,
            dependencies=[Depends(per_address_limit)],
            responses={**problem_responses(404, 429),
                       200: {"content": {"text/html": {}}, "description": "JSON, or the "
                             "French page when asked by a browser (Accept: text/html)"}},
            summary="A receipt's status (public; no personal data)")
async def receipt_status(receipt_id: str, request: Request,
                         ctx: ContextDep) -> HTMLResponse | JSONResponse:
    receipt = await ctx.db.read(lambda s: s.get(Receipt, receipt_id))
    if receipt is None:
        if wants_html(request):
            return HTMLResponse(render_unknown_page(), status_code=404)
        raise NotFound("no such receipt")
    if wants_html(request):
        view = view_of(receipt, ctx.receipts.verify_url(receipt.id))
        return HTMLResponse(render_status_page(view, authentic=True))
    return JSONResponse(ReceiptPublic(
        id=receipt.id, status=receipt.status, amc_cents=receipt.amc_cents,
        patient_due_cents=receipt.patient_due_cents, finess=receipt.finess,
        operator=receipt.operator, issued_at=receipt.issued_at.isoformat(),
        expires_at=receipt.expires_at.isoformat()).model_dump())


@router.get("/.well-known/jwks.json", summary="The receipt signing keys (Ed25519)")
async def jwks(ctx: ContextDep) -> dict[str, object]:
    return ctx.receipts.signer.jwks()


@router.get("/v1/exposure", response_model=ExposurePublic,
            dependencies=[Depends(rate_limited("reads"))],
            responses=problem_responses(401, 403, 429),
            summary="The pharmacy's outstanding provisional total, per operator")
async def exposure(ctx: ContextDep, principal: PharmacyDep) -> ExposurePublic:
    finess = principal.finess or ""
    by_operator = await ctx.db.read(lambda s: repository.outstanding_by_operator(s, finess))
    return ExposurePublic(outstanding_cents=sum(by_operator.values()), by_operator=by_operator)


@router.get("/console/receipts/{receipt_id}/print", response_class=HTMLResponse,
            responses=problem_responses(401, 403, 404),
            summary="The printable receipt (the pharmacy's key, or its console session)")
async def print_receipt(receipt_id: str, ctx: ContextDep,
                        pharmacy: ReceiptPrinterDep) -> HTMLResponse:
    receipt = await ctx.db.read(lambda s: s.get(Receipt, receipt_id))
    if receipt is None or receipt.finess != pharmacy.finess:
        raise NotFound("no such receipt")
    return HTMLResponse(render_print_page(view_of(receipt, ctx.receipts.verify_url(receipt.id))))
