"""Every query on the events feed."""

from __future__ import annotations

from sqlmodel import col, select

from gateway.storage.models import Event
from gateway.storage.unit import UnitOfWork


def page(session: UnitOfWork, finess: str, after: int, limit: int) -> list[Event]:
    """This pharmacy's events after position `after`, oldest first."""
    return list(session.exec(
        select(Event).where(col(Event.finess) == finess, col(Event.id) > after)
        .order_by(col(Event.id)).limit(limit)
    ).all())
