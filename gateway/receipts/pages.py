"""The receipt's French pages: what a patient sees on scanning it, and what gets printed.

Server-side only (no JavaScript); public figures only, never the beneficiary.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import qrcode
import qrcode.image.svg
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from gateway.receipts.views import ReceiptView

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
STYLESHEET_URL = "/static/receipt.css"  # gateway/static/receipt.css, served by the gateway

# The anti-phishing text printed on every receipt (French), verbatim: tests check it.
ANTI_PHISHING_WARNING = (
    "Reçu provisoire de tiers payant. Ni votre complémentaire santé, ni l'Assurance Maladie, "
    "ni votre pharmacie ne vous demanderont par e-mail, SMS ou téléphone vos coordonnées "
    "bancaires, votre numéro de sécurité sociale ou un mot de passe, ni de « valider un "
    "remboursement » en cliquant sur un lien. Vérifiez ce reçu uniquement en scannant son QR "
    "code. En cas de doute : cybermalveillance.gouv.fr."
)

BASIS_WORDING = {
    "card": "sur présentation de la carte de tiers payant (accord de la complémentaire)",
    "cached_rights": "d'après les droits vérifiés récemment",
}


@dataclass(frozen=True, slots=True)
class StatusWording:
    """A status as the patient reads it: a short headline, one sentence, a visual tone."""

    headline: str
    detail: str
    tone: str  # ok | pending | alert


STATUS_WORDING = {
    "provisional": StatusWording(
        "Reçu provisoire valide",
        "Votre complémentaire santé n'a pas encore confirmé la prise en charge. "
        "Vous n'avez rien à faire.",
        "pending",
    ),
    "honored": StatusWording(
        "Honoré", "Votre complémentaire santé a confirmé la prise en charge.", "ok"
    ),
    "contested": StatusWording(
        "Contesté",
        "Votre complémentaire santé a refusé la prise en charge ; "
        "votre pharmacie vous contactera.",
        "alert",
    ),
    "void": StatusWording(
        "Annulé",
        "Ce reçu a été annulé et n'est plus valable. "
        "Pour toute question, adressez-vous à votre pharmacie.",
        "alert",
    ),
}
EXPIRED_WORDING = StatusWording(
    "Expiré",
    "Ce reçu provisoire n'est plus valable. Pour toute question, adressez-vous à votre pharmacie.",
    "alert",
)
UNKNOWN_STATUS_WORDING = StatusWording(
    "Statut indisponible", "Pour toute question, adressez-vous à votre pharmacie.", "alert"
)


def format_cents(cents: int) -> str:
    """Integer cents the French way, never through a float: 123456 -> '1 234,56 €'."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError(f"amounts are integer cents, got {type(cents).__name__}")
    euros, rest = divmod(abs(cents), 100)
    grouped = f"{euros:,}".replace(",", "\u202f")  # narrow no-break space between thousands
    sign = "-" if cents < 0 else ""
    return f"{sign}{grouped},{rest:02d}\u00a0€"


@functools.cache
def _paris() -> ZoneInfo:
    return ZoneInfo("Europe/Paris")


def _aware(value: datetime) -> datetime:
    """Stored instants are UTC; a naive one is read as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def format_date_fr(value: date | datetime) -> str:
    """A date as French patients read it (29/11/2026); instants shown in Paris time."""
    if isinstance(value, datetime):
        value = _aware(value).astimezone(_paris()).date()
    return value.strftime("%d/%m/%Y")


def qr_svg(url: str) -> Markup:
    """The URL as an inline, labelled SVG QR code, drawn here: no request leaves the page."""
    image = qrcode.make(url, image_factory=qrcode.image.svg.SvgPathImage)
    svg = image.to_string(encoding="unicode")
    label = escape(f"QR code de vérification du reçu : {url}")
    opening = (
        f'<svg class="qr-code" role="img" aria-label="{label}" '
        'shape-rendering="crispEdges" '
    )
    svg = svg.replace("<svg ", opening, 1)
    svg = svg.replace(">", f"><title>{label}</title>", 1)  # first '>' closes <svg ...>
    return Markup(svg)  # noqa: S704 - qrcode's own output; the URL inside is escaped


@functools.cache
def environment() -> Environment:
    """One autoescaping Jinja2 environment for every receipt page, built on first use."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = format_cents
    env.filters["date_fr"] = format_date_fr
    env.globals["stylesheet_url"] = STYLESHEET_URL
    env.globals["warning"] = ANTI_PHISHING_WARNING
    return env


def status_wording(view: ReceiptView, *, now: datetime) -> StatusWording:
    """A provisional receipt past its expiry is expired; settled ones keep their status."""
    if view.status == "provisional" and _aware(now) >= _aware(view.expires_at):
        return EXPIRED_WORDING
    return STATUS_WORDING.get(view.status, UNKNOWN_STATUS_WORDING)


def render_status_page(
    view: ReceiptView, *, authentic: bool, now: datetime | None = None
) -> str:
    """The page a patient reaches by scanning the QR code."""
    wording = status_wording(view, now=now or datetime.now(UTC))
    return environment().get_template("receipts/status.html").render(
        view=view, authentic=authentic, wording=wording
    )


def render_unknown_page() -> str:
    """The page for a receipt id this gateway never issued."""
    return environment().get_template("receipts/unknown.html").render()


def render_print_page(view: ReceiptView) -> str:
    """The printable receipt (A5 portrait, fits A4), QR code drawn server-side."""
    return environment().get_template("receipts/print.html").render(
        view=view,
        basis=BASIS_WORDING.get(view.basis, view.basis),
        qr=qr_svg(view.verify_url),
    )
