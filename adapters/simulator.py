"""A simulated operator serving the reference protocol (docs/adapters.md), with faults.

Why: the gateway's breakers, queue and provisional coverage can only be exercised against
an operator that fails on demand and remembers what it received.

Business rules (deterministic):
- a claim whose `amc.member_number` starts with "REJ" is rejected R02 "Droits fermés ou
  carte expirée"; one whose `service_date` is outside `amc.valid_from..valid_to` is
  rejected R03 "Date de soins hors période de validité"; any other is accepted with
  reference "<name>-<n:08d>" (n-th claim this simulator accepted, never reset) and
  `amc_cents` = the sum of its lines' `amc_cents`;
- the same `Idempotency-Key` again gets the first answer again (the ledger counts it);
  no key: 400; a body it cannot read: 422 (the body is never echoed);
- rights: not covered for "REJ..." members, else covered until `amc.valid_to` with fixed
  guarantees; cancel: 404 for a key never received, else `{"status": "cancelled"}`.

Faults (`POST /_faults`; `/_faults` and `/_ledger` are never affected): `latency_ms` delays
every protocol request in every mode, then `ok` answers normally, `down` 503 with
`Retry-After: 1` without recording anything, `hang` answers only after an hour (or stops
when the client goes away), `slow` is `ok` after the latency, `error` 500 without
processing, `flaky` 500 with probability `error_rate`, `ambiguous` records a POST
/claims and then answers 504, and `hold` records a POST /claims and then holds its answer
for an hour (or until the client goes away: the operator has the claim, its sender never
hears so). A request whose client disconnected is not processed.

Batches: `POST /_batches` reads a hand-over batch and answers its signed acknowledgement
(adapters.simulator_batches), judging each claim by the rules above, once.

The ledger holds idempotency keys, counts and statuses only: never personal data. All
state lives in the app instance, so simulators in one process are independent.
`GET /_ledger?health=true` adds `health`, the `GET /health` calls that arrived (whatever the
fault), and `health_at`, their arrival times (Unix seconds): to count a breaker's probes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from adapters.simulator_batches import add_batch_intake

HANG_S = 3600.0
_POLL_S = 0.05
GUARANTEES: dict[str, int] = {"PH7": 100, "PH4": 100, "PH1": 100, "PH2": 0, "PMR": 100}
R02 = ("R02", "Droits fermés ou carte expirée")
R03 = ("R03", "Date de soins hors période de validité")


class Faults(BaseModel):
    """The injected behaviour; every field has a harmless default."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["ok", "down", "hang", "slow", "error", "flaky", "ambiguous", "hold"] = "ok"
    latency_ms: int = Field(default=0, ge=0, le=3_600_000)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)


@dataclass
class _Entry:
    answer: dict[str, Any]
    count: int = 1
    cancelled: bool = False
    lookups: int = 0


@dataclass
class _State:
    name: str
    faults: Faults = field(default_factory=Faults)
    claims: dict[str, _Entry] = field(default_factory=dict)
    received: int = 0
    rights: int = 0
    accepted: int = 0
    batches: int = 0  # batch files acknowledged (adapters.simulator_batches)
    health_at: list[float] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    def ledger(self, *, health: bool = False) -> dict[str, Any]:
        claims = [
            {"key": key, "count": e.count, "status": e.answer["status"],
             "cancelled": e.cancelled, "lookups": e.lookups}
            for key, e in self.claims.items()
        ]
        ledger = {"name": self.name, "claims": claims, "received": self.received,
                  "rights": self.rights, "batches": self.batches}
        if health:
            ledger.update(health=len(self.health_at), health_at=list(self.health_at))
        return ledger

    def reset(self) -> None:
        """Forget what was received; `accepted` stays so references are never reused."""
        self.claims.clear()
        self.health_at.clear()
        self.received = self.rights = self.batches = 0

    @staticmethod
    def read(body: Any) -> tuple[str, date, date, date, int]:
        """(member, service date, valid from, valid to, AMC total) of a claim's body;
        ValueError, KeyError or TypeError if unreadable."""
        amc = body["amc"]
        member = _text(amc["member_number"])
        service = date.fromisoformat(body["service_date"])
        valid_from, valid_to = date.fromisoformat(amc["valid_from"]), date.fromisoformat(
            amc["valid_to"]
        )
        lines = body["lines"]
        if not isinstance(lines, list) or not lines:
            raise ValueError("no lines")
        return member, service, valid_from, valid_to, sum(
            _cents(line["amc_cents"]) for line in lines)

    def record(self, key: str, answer: dict[str, Any]) -> None:
        self.claims[key] = _Entry(answer)

    def judge(self, body: Any) -> dict[str, Any]:
        """The answer to a new claim; ValueError, KeyError or TypeError if unreadable."""
        member, service, valid_from, valid_to, total = self.read(body)
        if member.startswith("REJ"):
            return {"status": "rejected", "code": R02[0], "label": R02[1]}
        if not valid_from <= service <= valid_to:
            return {"status": "rejected", "code": R03[0], "label": R03[1]}
        self.accepted += 1
        return {"status": "accepted", "reference": f"{self.name}-{self.accepted:08d}",
                "amc_cents": total}


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string")
    return value


def _cents(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError("expected non-negative integer cents")
    return value


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _pause(request: Request, seconds: float) -> bool:
    """Sleep up to `seconds`; False as soon as the client has gone, so a hang ends with it."""
    deadline = anyio.current_time() + seconds
    while (left := deadline - anyio.current_time()) > 0:
        await anyio.sleep(min(left, _POLL_S))
        if await request.is_disconnected():
            return False
    return True


async def _gate(state: _State, request: Request) -> Response | None:
    """Apply the injected fault before processing; a response here means "not processed"."""
    await request.body()  # read first: polling for a disconnect must not swallow the body
    faults = state.faults
    gone = Response(status_code=499)
    if not await _pause(request, faults.latency_ms / 1000):
        return gone
    if faults.mode == "down":
        return _problem(503, "operator down", {"Retry-After": "1"})
    if faults.mode == "hang" and not await _pause(request, HANG_S):
        return gone
    if faults.mode == "error" or (
        faults.mode == "flaky" and state.rng.random() < faults.error_rate
    ):
        return _problem(500, "injected error")
    return None


def create_simulator(name: str = "simulator") -> FastAPI:
    """A fresh simulated operator named `name`, with its own faults, ledger and randomness."""
    state = _State(name=name)
    app = FastAPI(title=f"Simulated operator {name}", openapi_url=None)
    app.state.simulator = state

    @app.get("/health")
    async def health(request: Request) -> Response:
        state.health_at.append(time.time())
        return await _gate(state, request) or JSONResponse({"status": "ok"})

    @app.post("/rights")
    async def rights(request: Request) -> Response:
        if (early := await _gate(state, request)) is not None:
            return early
        try:
            amc = (await request.json())["amc"]
            member = _text(amc["member_number"])
            valid_to = date.fromisoformat(amc["valid_to"]).isoformat()
        except (ValueError, KeyError, TypeError):
            return _problem(422, "unreadable rights request")
        state.rights += 1
        if member.startswith("REJ"):
            return JSONResponse({"covered": False, "valid_to": None, "guarantees": {}})
        return JSONResponse({"covered": True, "valid_to": valid_to, "guarantees": GUARANTEES})

    @app.post("/claims")
    async def submit(request: Request) -> Response:
        if (early := await _gate(state, request)) is not None:
            return early
        key = request.headers.get("Idempotency-Key", "").strip()
        if not key:
            return _problem(400, "missing Idempotency-Key")
        entry = state.claims.get(key)
        if entry is not None:
            entry.count += 1
        else:
            try:
                entry = _Entry(state.judge(await request.json()))
            except (ValueError, KeyError, TypeError):
                return _problem(422, "unreadable claim")
            state.claims[key] = entry
        state.received += 1
        if state.faults.mode == "ambiguous":
            return _problem(504, "processed, answer lost")
        if state.faults.mode == "hold" and not await _pause(request, HANG_S):
            return Response(status_code=499)  # recorded; the sender went away meanwhile
        return JSONResponse(entry.answer)

    @app.get("/claims/{key}")
    async def lookup(key: str, request: Request) -> Response:
        if (early := await _gate(state, request)) is not None:
            return early
        entry = state.claims.get(key)
        if entry is None:
            return _problem(404, "claim never received")
        entry.lookups += 1
        return JSONResponse(entry.answer)

    @app.post("/claims/{key}/cancel")
    async def cancel(key: str, request: Request) -> Response:
        if (early := await _gate(state, request)) is not None:
            return early
        entry = state.claims.get(key)
        if entry is None:
            return _problem(404, "claim never received")
        entry.cancelled = True
        return JSONResponse({"status": "cancelled"})

    add_batch_intake(app, state)

    @app.get("/_faults")
    async def get_faults() -> Faults:
        return state.faults

    @app.post("/_faults")
    async def set_faults(faults: Faults) -> Faults:
        state.faults = faults
        return faults

    @app.get("/_ledger")
    async def ledger(health: bool = False) -> dict[str, Any]:
        return state.ledger(health=health)

    @app.post("/_ledger/reset")
    async def reset_ledger() -> dict[str, Any]:
        state.reset()
        return state.ledger()

    return app
