"""The admin's audit page: the latest entries and whether the trail is intact.

The verdict is this process's `TrailWatch`: the full check `gateway audit verify` runs
(hashes, links, seals, signed heads) in the background, and on each view what came after
it; the page says when the last full check began.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from gateway.audit.trail import Verification
from gateway.audit.watch import TrailReport
from gateway.console import repository
from gateway.console.views import render, when
from gateway.console.web import role_in
from gateway.identity.sessions import ConsoleUser
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


def verdict(report: TrailReport) -> str:
    result = report.result
    if result is None:
        return ("Vérification complète du journal en cours : rechargez la page dans un "
                "moment pour en voir le résultat.")
    if result.ok:
        return (f"Journal intègre : {result.checked} entrées vérifiées (dernière "
                f"vérification complète commencée le {when(report.full_at)})")
    return broken(result)


def broken(result: Verification) -> str:
    raw = result.problem or ""
    words = next((french for prefix, french in PROBLEMS if raw.startswith(prefix)), None)
    problem = f"{words} ({raw})" if words else raw or "raison inconnue"
    return f"Journal altéré à l'entrée {result.first_broken_id} : {problem}"


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(request: Request, ctx: ContextDep, user: AdminDep) -> HTMLResponse:
    report = await ctx.trail.view()
    entries = await ctx.db.read(lambda session: repository.latest_audit(session, limit=SHOWN))
    rows = [AuditRow(e.id or 0, e.at, e.actor, e.role, e.action, e.object_id, e.outcome)
            for e in entries]
    tone = "pending" if report.result is None else "ok" if report.result.ok else "alert"
    return render(request, "audit.html", user=user, rows=rows, tone=tone,
                  verdict=verdict(report), shown=SHOWN)
