"""The operations console's batch hand-over (docs/handover.md): an operator's batches,
export and download, the upload of its acknowledgement file, release. Ids and counts
only: no personal data. Every action goes through `gateway.handover.service`, which
writes its audit entry."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from adapters.batch_files import MAX_BATCH_CLAIMS
from gateway.console.operations import STAFF, OperatorName, StaffDep
from gateway.console.views import render
from gateway.console.web import CsrfUserDep, role_in
from gateway.errors import Conflict
from gateway.handover.endpoints import batch_file
from gateway.handover.schemas import BatchPublic
from gateway.handover.service import AcksRefused, Handover
from gateway.ops.endpoints import known_operator
from gateway.web.deps import ContextDep

router = APIRouter(prefix="/console/operations", include_in_schema=False)
StaffOnly = [Depends(role_in(*STAFF))]
BatchPath = Annotated[str, Path(pattern=r"^bat_[0-9A-Z]{26}$")]
NOTICES = {
    "exported": ("ok", "Lot exporté : {count} demande(s) retirée(s) de la file d'attente."),
    "imported": ("ok", "Accusés de réception importés : {count} demande(s) réglée(s)."),
    "released": ("ok", "Lot libéré : {count} demande(s) remise(s) en file d'attente."),
    "nothing": ("alert", "Aucune demande en file d'attente à exporter."),
    "closed": ("alert", "Ce lot est déjà acquitté ou libéré."),
    "unset": ("alert", "Pas de clés de remise par lot configurées pour cet opérateur."),
}


def back(operator: str, notice: str, count: int = 0) -> RedirectResponse:
    query = urlencode({"notice": notice, "count": count})
    return RedirectResponse(f"/console/operations/{operator}/batches?{query}", status_code=303)


def notice(request: Request) -> dict[str, str] | None:
    code = request.query_params.get("notice", "")
    if code not in NOTICES:
        return None
    tone, text = NOTICES[code]
    count = request.query_params.get("count", "0")
    return {"tone": tone, "text": text.format(count=int(count) if count.isdigit() else 0),
            "claim": ""}


async def page(request: Request, ctx: ContextDep, user: StaffDep, operator: str, *,
               problems: list[str] | None = None, status_code: int = 200) -> HTMLResponse:
    handover = Handover.of(ctx)
    batches = [BatchPublic.of(batch, awaiting)
               for batch, awaiting in await handover.batches(operator)]
    settings = ctx.settings.operator(operator)
    return render(request, "batches.html", user=user, operator=operator, batches=batches,
                  configured=bool(settings and settings.hands_over), problems=problems or [],
                  max_claims=settings.handover_max_claims if settings else MAX_BATCH_CLAIMS,
                  notice=notice(request), status_code=status_code)


@router.get("/{name}/batches", response_class=HTMLResponse)
async def batches(request: Request, ctx: ContextDep, user: StaffDep,
                  name: OperatorName) -> HTMLResponse:
    return await page(request, ctx, user, known_operator(ctx, user.principal, name))


@router.post("/{name}/exports", dependencies=StaffOnly, response_model=None)
async def export(ctx: ContextDep, user: CsrfUserDep, name: OperatorName,
                 max_claims: Annotated[int | None,
                                       Form(alias="max", ge=1, le=MAX_BATCH_CLAIMS)] = None,
                 ) -> Response:
    """The batch file itself, as a download; the board shows the batch afterwards."""
    operator = known_operator(ctx, user.principal, name)
    try:
        batch, text = await Handover.of(ctx).export(operator, actor=user.principal,
                                                    max_claims=max_claims)
    except Conflict as exc:
        return back(operator, "unset" if exc.type == "handover-not-configured" else "nothing")
    return batch_file(text, batch.id)


@router.get("/{name}/exports/{batch_id}", dependencies=StaffOnly)
async def export_again(ctx: ContextDep, user: StaffDep, name: OperatorName,
                       batch_id: BatchPath) -> Response:
    operator = known_operator(ctx, user.principal, name)
    return batch_file(await Handover.of(ctx).file_of(operator, batch_id, actor=user.principal),
                      batch_id)


@router.post("/{name}/acks", dependencies=StaffOnly, response_model=None)
async def import_acks(request: Request, ctx: ContextDep, user: CsrfUserDep,
                      name: OperatorName, acks: UploadFile) -> Response:
    operator = known_operator(ctx, user.principal, name)
    try:
        text = (await acks.read()).decode("ascii")
        done = await Handover.of(ctx).import_acks(operator, text, actor=user.principal)
    except UnicodeDecodeError:
        return await page(request, ctx, user, operator, status_code=422,
                          problems=["le fichier n'est pas un accusé de réception (JWS)"])
    except AcksRefused as exc:
        return await page(request, ctx, user, operator, status_code=422,
                          problems=[e["message"] for e in exc.errors or []])
    return back(operator, "imported", done.accepted + done.rejected)


@router.post("/{name}/exports/{batch_id}/release", dependencies=StaffOnly)
async def release(ctx: ContextDep, user: CsrfUserDep, name: OperatorName,
                  batch_id: BatchPath) -> RedirectResponse:
    operator = known_operator(ctx, user.principal, name)
    try:
        count = await Handover.of(ctx).release(operator, batch_id, actor=user.principal)
    except Conflict:
        return back(operator, "closed")
    return back(operator, "released", count)
