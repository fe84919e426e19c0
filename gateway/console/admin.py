"""The admin's audit page: the latest entries and whether the trail is intact.

The check is the full one `gateway audit verify` runs: hashes, links, seals, signed heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from gateway.audit.heads import head_keys_of, verify_trail
from gateway.audit.trail import Verification
from gateway.console import repository
from gateway.console.views import render
from gateway.console.web import role_in
from gateway.identity.sessions import ConsoleUser
from gateway.storage.models import AuditEntry
from gateway.storage.unit import UnitOfWork
from gateway.web.deps import ContextDep

router = APIRouter(prefix="/console", include_in_schema=False)
AdminDep = Annotated[ConsoleUser, Depends(role_in("admin"))]
SHOWN = 200
PROBLEMS = (  # the checker's reasons start with one of these words
    ("missing", "entrée supprimée"),
    ("moved or altered", "entrée déplacée ou modifiée"),
    ("altered", "entrée modifiée"),
    ("not sealed", "entrée non scellée par la passerelle (ajoutée à la main ou forgée)"),
    ("rewritten", "entrée réécrite depuis une signature du journal"),
)


@dataclass(frozen=True, slots=True)
class AuditRow:
    id: int
    at: object
    actor: str
    role: str
    action: str
    object_id: str | None
    outcome: str


def verdict(result: Verification) -> str:
    if result.ok:
        return f"Journal intègre : {result.checked} entrées vérifiées"
    raw = result.problem or ""
    words = next((french for prefix, french in PROBLEMS if raw.startswith(prefix)), None)
    problem = f"{words} ({raw})" if words else raw or "raison inconnue"
    return f"Journal altéré à l'entrée {result.first_broken_id} : {problem}"


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, ctx: ContextDep, user: AdminDep) -> HTMLResponse:
    keys = head_keys_of(ctx.settings)  # the audit head keys, and the receipt keys (legacy)

    def load(session: UnitOfWork) -> tuple[list[AuditEntry], Verification]:
        return (repository.latest_audit(session, limit=SHOWN),
                verify_trail(session, audit_log=ctx.audit_log, keys=keys))

    entries, result = await ctx.db.read(load)
    rows = [AuditRow(e.id or 0, e.at, e.actor, e.role, e.action, e.object_id, e.outcome)
            for e in entries]
    return render(request, "audit.html", user=user, rows=rows, verified=result.ok,
                  verdict=verdict(result), shown=SHOWN)
