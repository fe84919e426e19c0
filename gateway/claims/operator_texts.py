"""Operators' free texts never travel further than the adapter: codes and fixed messages do.

A refusal's label or a problem's `detail` is whatever the operator's system wrote, and
it may repeat the person it is about (a name, a NIR). The gateway keeps only a code
(a short token, checked) and shows a message of its own for it; the operator's words
are neither stored, logged, returned nor shown.
"""

from __future__ import annotations

import re

CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
UNREADABLE = "unreadable"
# The AMC rejection causes pharmacists know (the reference protocol's R codes), and the
# HTTP refusals of the reference adapter.
MESSAGES = {
    "R01": "Bénéficiaire inconnu de l'organisme complémentaire",
    "R02": "Droits fermés ou carte expirée",
    "R03": "Date de soins hors période de validité",
    "R04": "Prestation exclue par les garanties du contrat",
    "R05": "Demande en double",
    "http-400": "Demande refusée par l'opérateur : requête non conforme",
    "http-401": "Demande refusée par l'opérateur : passerelle non authentifiée",
    "http-403": "Demande refusée par l'opérateur : accès non autorisé",
    "http-404": "Demande refusée par l'opérateur : ressource inconnue",
    "http-409": "Demande refusée par l'opérateur : conflit",
    "http-413": "Demande refusée par l'opérateur : trop volumineuse",
    "http-422": "Demande refusée par l'opérateur : données refusées",
}


def safe_code(raw: object) -> str:
    """The operator's code if it is a short token, else `unreadable` (never its text)."""
    return raw if isinstance(raw, str) and CODE.match(raw) else UNREADABLE


def safe_reference(raw: object) -> str | None:
    """The operator's reference for an accepted claim, if it looks like an identifier."""
    return raw if isinstance(raw, str) and REFERENCE.match(raw) else None


def message_for(code: str) -> str:
    """The gateway's own words for a refusal code."""
    return MESSAGES.get(code, f"Refus de l'opérateur (code {safe_code(code)})")


def refusal_detail(code: object) -> str:
    """What history, `last_error` and problem+json say of an operator's refusal."""
    checked = safe_code(code)
    return f"operator refused the request: {checked} ({message_for(checked)})"
