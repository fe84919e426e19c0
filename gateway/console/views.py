"""Console wording and rendering: French labels, Paris time, euros, and one-line notices.

Templates get these helpers as `fmt`, so they never compute anything themselves.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse

from gateway.console.web import page
from gateway.identity.sessions import ConsoleUser
from gateway.receipts.pages import format_cents

PARIS = ZoneInfo("Europe/Paris")
CLAIM_ID = re.compile(r"^clm_[0-9A-Z]{26}$")

STATUS_WORDS = {
    "new": "reçue", "pending": "en cours d'envoi", "queued": "en file d'attente",
    "accepted": "acceptée", "rejected": "rejetée", "cancelled": "annulée",
    "failed": "en échec", "exported": "remise par lot à l'opérateur",
}
RECEIPT_WORDS = {"provisional": "provisoire", "honored": "honoré", "contested": "contesté",
                 "void": "annulé"}
REFUSAL_WORDS = {
    "not_offered": "pas de prise en charge provisoire pour cet opérateur",
    "no_cached_rights": "aucun droit vérifié récemment",
    "not_covered": "droits non ouverts d'après la dernière vérification",
    "card_expired": "carte expirée à la date des soins",
    "card_not_yet_valid": "carte pas encore valable à la date des soins",
    "over_claim_cap": "plafond par facture dépassé",
    "over_beneficiary_daily_cap": "plafond journalier du bénéficiaire dépassé",
    "over_pharmacy_outstanding_cap": "plafond d'encours de la pharmacie dépassé",
}
NOTICES = {
    "paused": ("ok", "Envois vers {operator} suspendus."),
    "resumed": ("ok", "Envois vers {operator} repris."),
    "replayed": ("ok", "{count} demande(s) de {operator} renvoyée(s)."),
    "replay_running": ("alert", "Un renvoi de {operator} est déjà en cours ; réessayez "
                                "quand il sera terminé."),
    "reason_missing": ("alert", "Indiquez le motif de la suspension de {operator}."),
    "fault_down": ("ok", "Simulateur {operator} mis en panne."),
    "fault_ok": ("ok", "Simulateur {operator} rétabli."),
    "sample": ("ok", "Demande d'exemple enregistrée."),
}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def paris(value: datetime) -> datetime:
    return _aware(value).astimezone(PARIS)


def hhmm(value: datetime | None) -> str:
    """14:05 today; 12/03 14:05 on another day (Paris time)."""
    if value is None:
        return "—"
    local = paris(value)
    if local.date() == datetime.now(PARIS).date():
        return local.strftime("%H:%M")
    return local.strftime("%d/%m %H:%M")


def when(value: datetime | None) -> str:
    return paris(value).strftime("%d/%m/%Y %H:%M:%S") if value else "—"


def iso(value: datetime | None) -> str:
    return _aware(value).isoformat() if value else ""


def age(value: datetime | None, now: datetime | None = None) -> str:
    """How long ago, briefly: 45 s, 12 min, 2 h 05, 3 j 4 h."""
    if value is None:
        return "—"
    seconds = max(0, int(((now or datetime.now(UTC)) - _aware(value)).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 24:
        return f"{hours} h {minutes % 60:02d}"
    return f"{hours // 24} j {hours % 24} h"


def rate(per_s: float) -> str:
    return f"{per_s:.1f}".replace(".", ",") + " /s"


def plural(count: int, one: str, many: str) -> str:
    return one if count == 1 else many


FMT = MappingProxyType({
    "money": format_cents, "hhmm": hhmm, "when": when, "iso": iso, "age": age, "rate": rate,
    "plural": plural, "clock": lambda: datetime.now(PARIS).strftime("%H:%M:%S"),
    "status": lambda s: STATUS_WORDS.get(s, s),
    "receipt": lambda s: RECEIPT_WORDS.get(s, s),
    "refusal": lambda s: REFUSAL_WORDS.get(s or "", s or "non précisé"),
})


def notice_of(request: Request, operators: set[str]) -> dict[str, str] | None:
    """The one-line outcome a redirect asked for; only known names and numbers get in."""
    code = request.query_params.get("notice", "")
    if code not in NOTICES:
        return None
    tone, text = NOTICES[code]
    operator = request.query_params.get("operator", "")
    count = request.query_params.get("count", "0")
    claim = request.query_params.get("claim", "")
    return {
        "tone": tone,
        "text": text.format(operator=operator if operator in operators else "l'opérateur",
                            count=int(count) if count.isdigit() else 0),
        "claim": claim if CLAIM_ID.match(claim) else "",
    }


def render(request: Request, template: str, *, user: ConsoleUser | None,
           status_code: int = 200, **context: Any) -> HTMLResponse:
    """A console page with the helpers and, in `gateway demo`, the demo controls."""
    context.setdefault("demo", getattr(request.app.state, "demo", None))
    response = page(request, template, user=user, status_code=status_code, fmt=FMT, **context)
    response.headers["Cache-Control"] = "no-store"  # no claim list left in a shared browser
    return response
