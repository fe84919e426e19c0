"""The receipt pages: verbatim warning, French money and dates, QR code, escaping."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest
import qrcode
import qrcode.image.svg

from gateway.receipts.pages import (
    format_cents,
    render_print_page,
    render_status_page,
    render_unknown_page,
)
from gateway.receipts.views import ReceiptView

# DOMAIN.md, "Anti-phishing text for the printed receipt (French)", copied independently.
WARNING = (
    "Reçu provisoire de tiers payant. Ni votre complémentaire santé, ni l'Assurance Maladie, "
    "ni votre pharmacie ne vous demanderont par e-mail, SMS ou téléphone vos coordonnées "
    "bancaires, votre numéro de sécurité sociale ou un mot de passe, ni de « valider un "
    "remboursement » en cliquant sur un lien. Vérifiez ce reçu uniquement en scannant son QR "
    "code. En cas de doute : cybermalveillance.gouv.fr."
)
NBSP = "\u00a0"
BEFORE_EXPIRY = datetime(2026, 12, 1, tzinfo=UTC)

VIEW = ReceiptView(
    id="rcp_3f9a1c",
    status="provisional",
    amc_cents=280,
    patient_due_cents=1234,
    finess="330001231",
    operator="simulated-a",
    insurer_number="123456789",
    invoice_number="F-2026-0042",
    service_date=date(2026, 8, 31),
    basis="card",
    issued_at=datetime(2026, 8, 31, 22, 30, tzinfo=UTC),  # 1 Sept in Paris
    expires_at=datetime(2026, 11, 29, 10, 0, tzinfo=UTC),
    verify_url="https://gateway.example.fr/v1/receipts/rcp_3f9a1c",
)


def text_of(page: str) -> str:
    """The page's visible text, unescaped, ASCII whitespace collapsed (no-break spaces kept)."""
    without_tags = re.sub(r"<[^>]+>", " ", page)
    return re.sub(r"[ \t\r\n]+", " ", html.unescape(without_tags)).strip()


def status_page(view: ReceiptView = VIEW, *, authentic: bool = True,
                now: datetime = datetime(2026, 9, 1, tzinfo=UTC)) -> str:
    return render_status_page(view, authentic=authentic, now=now)


@pytest.mark.parametrize(
    ("cents", "expected"),
    [(0, "0,00"), (5, "0,05"), (280, "2,80"), (1234, "12,34"), (123456, "1\u202f234,56"),
     (-280, "-2,80")],
)
def test_money_is_formatted_the_french_way(cents: int, expected: str) -> None:
    assert format_cents(cents) == f"{expected}{NBSP}€"


def test_money_refuses_floats() -> None:
    with pytest.raises(TypeError):
        format_cents(2.8)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "page",
    [render_print_page(VIEW), status_page(), status_page(authentic=False), render_unknown_page()],
)
def test_every_page_carries_the_warning_verbatim_and_no_script(page: str) -> None:
    assert WARNING in html.unescape(page)
    assert "<script" not in page.lower()
    assert '<html lang="fr">' in page
    assert '<link rel="stylesheet" href="/static/receipt.css">' in page


def test_print_page_shows_the_receipt() -> None:
    page = render_print_page(VIEW)
    text = text_of(page)
    assert "<title>Reçu provisoire de tiers payant" in page
    assert "<h1>Reçu provisoire de tiers payant</h1>" in page
    assert f"Prise en charge complémentaire provisoire 2,80{NBSP}€" in text
    assert f"Reste à payer 12,34{NBSP}€" in text
    for expected in ("330001231", "simulated-a", "Numéro AMC 123456789", "F-2026-0042",
                     "Date de délivrance 31/08/2026", "Émis le 01/09/2026",
                     "Valable jusqu'au 29/11/2026", VIEW.verify_url,
                     "sur présentation de la carte de tiers payant (accord de la complémentaire)"):
        assert expected in text
    assert "@page" not in page  # print rules live in the served stylesheet


def test_print_page_words_the_cached_rights_basis() -> None:
    text = text_of(render_print_page(replace(VIEW, basis="cached_rights")))
    assert "d'après les droits vérifiés récemment" in text


def qr_path(page: str) -> str:
    svg = re.search(r"<svg\b[^>]*>.*?</svg>", page, re.S)
    assert svg is not None
    assert 'role="img"' in svg.group(0) and "aria-label=" in svg.group(0)
    assert "<title>QR code de vérification du reçu" in svg.group(0)
    path = re.search(r'<path d="([^"]+)"', svg.group(0))
    assert path is not None
    return path.group(1)


def modules(path: str) -> set[tuple[int, int]]:
    """The dark modules drawn by qrcode's SvgPathImage: one 'Mx,yH..V..H..z' per module."""
    return {(int(x), int(y)) for x, y in re.findall(r"M(\d+),(\d+)H", path)}


def test_print_page_qr_code_encodes_the_verify_url() -> None:
    path = qr_path(render_print_page(VIEW))
    # The same path as qrcode draws for the URL on its own...
    fresh = qrcode.make(VIEW.verify_url, image_factory=qrcode.image.svg.SvgPathImage)
    expected = re.search(r'<path d="([^"]+)"', fresh.to_string(encoding="unicode"))
    assert expected is not None and path == expected.group(1)
    # ...and its modules are exactly the QR matrix of the URL (border of 4 modules).
    code = qrcode.QRCode(border=4)
    code.add_data(VIEW.verify_url)
    matrix = code.get_matrix()
    dark = {(x, y) for y, row in enumerate(matrix) for x, on in enumerate(row) if on}
    assert modules(path) == dark
    other = qr_path(render_print_page(replace(VIEW, verify_url=VIEW.verify_url + "x")))
    assert other != path


@pytest.mark.parametrize(
    ("status", "headline", "detail"),
    [
        ("provisional", "Reçu provisoire valide",
         "Votre complémentaire santé n'a pas encore confirmé la prise en charge."),
        ("honored", "Honoré", "Votre complémentaire santé a confirmé la prise en charge."),
        ("contested", "Contesté",
         "Votre complémentaire santé a refusé la prise en charge ; "
         "votre pharmacie vous contactera."),
        ("void", "Annulé", "Ce reçu a été annulé et n'est plus valable."),
    ],
)
def test_status_page_words_each_status(status: str, headline: str, detail: str) -> None:
    page = status_page(replace(VIEW, status=status))
    text = text_of(page)
    assert f'<h2 id="status-title">{headline}</h2>' in html.unescape(page)
    assert detail in text
    assert "Reçu authentique" in text
    assert f"Reste à payer 12,34{NBSP}€" in text
    for expected in ("330001231", "simulated-a", "Émis le 01/09/2026",
                     "Valable jusqu'au 29/11/2026"):
        assert expected in text


def test_status_page_amc_part_is_provisional_only_while_provisional() -> None:
    assert f"Prise en charge complémentaire provisoire 2,80{NBSP}€" in text_of(status_page())
    honored = text_of(status_page(replace(VIEW, status="honored")))
    assert f"Prise en charge complémentaire 2,80{NBSP}€" in honored


def test_status_page_says_when_authenticity_is_not_confirmed() -> None:
    text = text_of(status_page(authentic=False))
    assert "Authenticité non confirmée" in text
    assert "Reçu authentique" not in text


def test_a_provisional_receipt_past_expiry_is_shown_expired() -> None:
    text = text_of(status_page(now=datetime(2026, 11, 29, 10, 0, tzinfo=UTC)))
    assert "Expiré" in text and "Reçu provisoire valide" not in text
    honored = text_of(status_page(replace(VIEW, status="honored"), now=BEFORE_EXPIRY))
    assert "Honoré" in honored


def test_unknown_page() -> None:
    page = render_unknown_page()
    text = text_of(page)
    assert "<title>Reçu inconnu" in page
    assert "Reçu inconnu" in text and "Ne donnez aucune information" in text


def test_pages_escape_what_they_are_given() -> None:
    hostile = replace(VIEW, invoice_number="<script>x</script>", operator='"><b>op</b>',
                      verify_url='https://gateway.example.fr/v1/receipts/"><script>y</script>')
    for page in (render_print_page(hostile), status_page(hostile)):
        assert "<script" not in page.lower()
        assert "<b>" not in page
    printed = render_print_page(hostile)
    assert "&lt;script&gt;x&lt;/script&gt;" in printed
    assert "<script>x</script>" in text_of(printed)
