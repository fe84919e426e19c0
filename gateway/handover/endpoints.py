"""`/v1/operators/{name}/exports` and `/acks`: the batch hand-over (operations, admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from adapters.batch_files import MAX_BATCH_CLAIMS
from gateway.errors import ValidationFailed, problem_responses
from gateway.handover.schemas import AcksImported, BatchId, BatchPublic, BatchReleased
from gateway.handover.service import Handover
from gateway.ops.endpoints import OperationsDep, known_operator
from gateway.web.deps import ContextDep, rate_limited

router = APIRouter(prefix="/v1/operators", tags=["operations"])
JOSE = "application/jose"
# the shape of a compact JWS of typ tp-batch-ack+jws (header.payload.signature), shortened
ACK_EXAMPLE = ("eyJhbGciOiJFZERTQSIsInR5cCI6InRwLWJhdGNoLWFjaytqd3MifQ."
               "eyJiYXRjaF9pZCI6ImJhdF8wMU05NEY3MTFKM1ZYSzBTUEdTSkZORjBKRiJ9.c2lnbmF0dXJl")
_FILE = {"content": {JOSE: {"schema": {"type": "string"}}},
         "description": "The batch file: a compact JWE (docs/handover.md)"}


def batch_file(text: str, batch_id: str, status: int = 200, **headers: str) -> Response:
    return Response(text + "\n", status_code=status, media_type=JOSE, headers={
        "Content-Disposition": f'attachment; filename="{batch_id}.jwe"',
        "Cache-Control": "no-store", **headers})


@router.post("/{name}/exports", status_code=201, response_class=Response,
             responses={201: _FILE, **problem_responses(401, 403, 404, 409, 422)},
             summary="Hand the oldest queued claims over in a signed, encrypted batch file")
async def export(name: str, ctx: ContextDep, principal: OperationsDep,
                 max_claims: Annotated[int | None,
                                       Query(alias="max", ge=1, le=MAX_BATCH_CLAIMS)] = None,
                 ) -> Response:
    operator = known_operator(ctx, principal, name)
    batch, text = await Handover.of(ctx).export(operator, actor=principal,
                                                max_claims=max_claims)
    return batch_file(text, batch.id, 201, Location=f"/v1/operators/{operator}/exports/"
                                                    f"{batch.id}", **{"Batch-Id": batch.id})


@router.get("/{name}/exports", response_model=list[BatchPublic],
            dependencies=[Depends(rate_limited("reads"))],
            responses=problem_responses(401, 403, 404, 429),
            summary="The operator's latest batches, newest first")
async def batches(name: str, ctx: ContextDep, principal: OperationsDep) -> list[BatchPublic]:
    operator = known_operator(ctx, principal, name)
    return [BatchPublic.of(batch, awaiting)
            for batch, awaiting in await Handover.of(ctx).batches(operator)]


@router.get("/{name}/exports/{batch_id}", response_class=Response,
            dependencies=[Depends(rate_limited("reads"))],
            responses={200: _FILE, **problem_responses(401, 403, 404, 409, 422, 429)},
            summary="An exported batch's file, made again from the database")
async def export_again(name: str, batch_id: BatchId, ctx: ContextDep,
                       principal: OperationsDep) -> Response:
    operator = known_operator(ctx, principal, name)
    return batch_file(await Handover.of(ctx).file_of(operator, batch_id, actor=principal),
                      batch_id)


@router.post("/{name}/exports/{batch_id}/release", response_model=BatchReleased,
             responses=problem_responses(401, 403, 404, 409, 422),
             summary="Put a batch's unacknowledged claims back in the queue")
async def release(name: str, batch_id: BatchId, ctx: ContextDep,
                  principal: OperationsDep) -> BatchReleased:
    operator = known_operator(ctx, principal, name)
    count = await Handover.of(ctx).release(operator, batch_id, actor=principal)
    return BatchReleased(batch_id=batch_id, released=count)


@router.post("/{name}/acks", response_model=AcksImported,
             responses=problem_responses(401, 403, 404, 409, 413, 422),
             openapi_extra={"requestBody": {"required": True, "content": {
                 JOSE: {"schema": {"type": "string"}, "example": ACK_EXAMPLE}},
                 "description": "The operator's acknowledgement file: a compact JWS "
                                "(docs/handover.md)"}},
             summary="Settle the claims an operator's signed acknowledgement answers")
async def import_acks(name: str, request: Request, ctx: ContextDep,
                      principal: OperationsDep) -> AcksImported:
    operator = known_operator(ctx, principal, name)
    try:
        text = (await request.body()).decode("ascii")
    except UnicodeDecodeError:
        raise ValidationFailed("the acknowledgement is not a compact JWS", errors=[
            {"field": "body", "message": "not ASCII"}]) from None
    done = await Handover.of(ctx).import_acks(operator, text, actor=principal)
    return AcksImported(batch_id=done.batch_id, accepted=done.accepted,
                        rejected=done.rejected, awaiting=done.left)
