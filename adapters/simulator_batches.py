"""The simulator's batch intake (docs/handover.md): it reads a hand-over batch and writes
its signed acknowledgement, as an operator back with batch intake only would.

`POST /_batches` takes the batch file (a compact JWE) as the body and answers the
acknowledgement file (a compact JWS, `application/jose`). Each claim is judged by the
simulator's usual rules and recorded in its ledger under its idempotency key, so a claim
it already had (sent online, or in an earlier batch) gets its first answer again and is
never counted as accepted twice. 409 until `BatchKeys` are set (`app.state.batch_keys`);
503 when the gateway's JWKS cannot be fetched; 422 for a batch it cannot decrypt, whose
gateway signature does not verify, or that is not for this operator: then nothing is
recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from adapters.batch_files import Ack, Acks, BadFile, Batch, open_batch, sign_acks

if TYPE_CHECKING:
    from adapters.simulator import _State

JOSE = "application/jose"
JWKS_TIMEOUT_S = 5.0


@dataclass
class BatchKeys:
    """The operator's private keys, and where it learns the gateway's public keys."""

    decryption_key: dict[str, Any]  # private JWK the batches are encrypted to
    signing_key: dict[str, Any]  # private JWK the acknowledgements are signed with
    gateway_jwks: dict[str, Any] | str = field(default_factory=dict)  # a JWKS, or its URL


async def _jwks(keys: BatchKeys) -> dict[str, Any]:
    if isinstance(keys.gateway_jwks, dict):
        return keys.gateway_jwks
    async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_S) as client:
        response = await client.get(keys.gateway_jwks)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]


def acknowledge(state: _State, batch: Batch) -> Acks:
    """Judge every claim of the batch once (the ledger remembers), answer each."""
    answers = []
    for claim in batch.claims:
        entry = state.claims.get(claim.claim_id)
        if entry is not None:
            entry.count += 1
            answer = entry.answer
        else:
            answer = state.judge(claim.body)
            state.record(claim.claim_id, answer)
        if answer["status"] == "accepted":
            answers.append(Ack(claim.claim_id, "accepted", amc_cents=answer["amc_cents"],
                               reference=answer["reference"]))
        else:
            answers.append(Ack(claim.claim_id, "rejected", code=answer["code"]))
    return Acks(batch.batch_id, state.name, datetime.now(UTC).isoformat(), answers)


def _readable(state: _State, body: Any) -> bool:
    try:
        state.read(body)
    except (ValueError, KeyError, TypeError):
        return False
    return True


def add_batch_intake(app: FastAPI, state: _State) -> None:
    app.state.batch_keys = None

    @app.post("/_batches")
    async def batches(request: Request) -> Response:
        keys: BatchKeys | None = app.state.batch_keys
        if keys is None:
            return JSONResponse({"detail": "no batch keys configured"}, status_code=409)
        try:
            jwks = await _jwks(keys)
        except (httpx.HTTPError, ValueError):
            return JSONResponse({"detail": "the gateway's JWKS could not be fetched"},
                                status_code=503)
        try:
            batch = open_batch((await request.body()).decode("ascii", "replace"),
                               decryption_key=keys.decryption_key, gateway_jwks=jwks)
            if batch.operator != state.name:
                raise BadFile([f"a batch for {batch.operator!r}, not {state.name!r}"])
            unreadable = [c.claim_id for c in batch.claims
                          if c.claim_id not in state.claims and not _readable(state, c.body)]
            if unreadable:
                raise BadFile([f"{claim_id}: unreadable claim" for claim_id in unreadable])
        except BadFile as exc:
            return JSONResponse({"detail": "batch refused", "problems": exc.problems},
                                status_code=422)
        acks = acknowledge(state, batch)
        state.batches += 1
        return Response(sign_acks(acks, signing_key=keys.signing_key), media_type=JOSE)
