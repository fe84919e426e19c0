"""`gateway demo` only: break and mend the simulated operators, submit sample claims.

`gateway demo` mounts these routes on the app it built (`mount`); the gateway itself
does not know they exist. The panel is drawn only when `app.state.demo` is set. Each
action is audited.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Literal
from urllib.parse import urlencode

import httpx
from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse

from gateway.claims.schemas import ClaimCreate
from gateway.claims.service import submit
from gateway.console.web import CsrfUserDep, NotForThisRole
from gateway.demo.samples import sample_claim
from gateway.errors import NotFound, OperatorUnavailableError
from gateway.web.deps import ContextDep

router = APIRouter(prefix="/console", include_in_schema=False)
Back = Annotated[Literal["/console/", "/console/operations"], Form()]


@dataclass(frozen=True, slots=True)
class DemoControls:
    """The demo's simulators (operator name -> base URL on 127.0.0.1) and its pharmacy."""

    simulators: Mapping[str, str]
    finess: str
    insurers: Mapping[str, str] = field(default_factory=dict)  # operator -> a routed insurer
    transports: Mapping[str, httpx.AsyncBaseTransport] = field(default_factory=dict)  # tests
    second_factors: Mapping[str, str] = field(default_factory=dict)  # e-mail -> TOTP secret

    async def set_fault(self, operator: str, mode: str) -> None:
        """Ask the simulator to fail (`down`) or to answer normally again (`ok`)."""
        async with httpx.AsyncClient(base_url=self.simulators[operator], timeout=5.0,
                                     transport=self.transports.get(operator)) as http:
            try:
                (await http.post("/_faults", json={"mode": mode})).raise_for_status()
            except httpx.HTTPError as exc:
                raise OperatorUnavailableError(f"simulator {operator} did not answer") from exc


async def demo_of(request: Request) -> DemoControls:
    demo: DemoControls | None = getattr(request.app.state, "demo", None)
    if demo is None:
        raise NotFound("the demo controls exist only under `gateway demo`")
    return demo


DemoDep = Annotated[DemoControls, Depends(demo_of)]


def mount(app: FastAPI, controls: DemoControls) -> None:
    """Give `app` the demo panel and its routes (before it serves)."""
    app.state.demo = controls
    app.include_router(router)


def fresh_invoice_number() -> str:
    return f"D{datetime.now(UTC):%y%m%d%H%M%S}{secrets.token_hex(2).upper()}"


@router.post("/demo/fault")
async def demo_fault(
    ctx: ContextDep, user: CsrfUserDep, demo: DemoDep,
    operator: Annotated[str, Form(max_length=64)],
    mode: Annotated[Literal["down", "ok"], Form()], back: Back = "/console/",
) -> RedirectResponse:
    if operator not in demo.simulators:
        raise NotFound(f"no simulator for {operator!r}")
    await demo.set_fault(operator, mode)
    await ctx.db.write(lambda s: ctx.audit_log.append(s, user.principal, "demo.fault",
                                                      object_id=operator, mode=mode))
    query = urlencode({"notice": f"fault_{mode}", "operator": operator})
    return RedirectResponse(f"{back}?{query}", status_code=303)


@router.post("/demo/sample")
async def demo_sample(
    ctx: ContextDep, user: CsrfUserDep, demo: DemoDep,
    operator: Annotated[str, Form(max_length=64)] = "",
) -> RedirectResponse:
    """A synthetic claim for the logged-in pharmacy, through the API's own service."""
    principal = user.principal
    if principal.role != "pharmacy":
        raise NotForThisRole("only a pharmacy submits claims")
    body = sample_claim(fresh_invoice_number())
    body["dispenser"] = {"finess": principal.finess}
    if operator in demo.insurers:
        body["amc"] = {**body["amc"], "insurer_number": demo.insurers[operator]}
    result = await submit(ctx=ctx, principal=principal,
                          claim_in=ClaimCreate.model_validate(body), idempotency_key=None)
    await ctx.db.write(lambda s: ctx.audit_log.append(
        s, principal, "demo.sample_claim", object_id=result.claim.id, status=result.claim.status))
    query = urlencode({"notice": "sample", "claim": result.claim.id})
    return RedirectResponse(f"/console/?{query}", status_code=303)
