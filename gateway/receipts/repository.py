"""Every query on receipts: exposure sums, lookups, lifecycle updates."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, exists, func, update
from sqlalchemy.dialects.postgresql import psycopg
from sqlmodel import col, select

from gateway.storage.models import Claim, Receipt, ReceiptExposure, table_of
from gateway.storage.unit import Ahead, UnitOfWork

OPEN = "provisional"


# Core statements on the table: these run on every queued claim, on SQLite's single
# writer, and an ORM select costs ~150 µs more than the query itself.
_RECEIPTS = table_of(Receipt)
# What this person (their NIR's keyed hash) was promised for this service date, void
# receipts excepted (bind parameters `beneficiary_hash`, `service_date`)...
BENEFICIARY_DAY_SUM = select(func.coalesce(func.sum(_RECEIPTS.c.amc_cents), 0)).where(
    _RECEIPTS.c.beneficiary_hash == bindparam("beneficiary_hash"),
    _RECEIPTS.c.service_date == bindparam("service_date"), _RECEIPTS.c.status != "void",
).scalar_subquery()
_EXPOSURE = table_of(ReceiptExposure)
# ...and the pharmacy's receipts still provisional, a row per operator kept by the
# database (`ReceiptExposure`; bind parameter `finess`). Scalar subqueries, so that a
# read that runs anyway can carry them as columns (`seed_exposure`).
PHARMACY_OUTSTANDING_SUM = select(func.coalesce(func.sum(_EXPOSURE.c.outstanding_cents), 0)
                                  ).where(_EXPOSURE.c.finess == bindparam("finess")
                                          ).scalar_subquery()
_BOTH_SUMS = select(BENEFICIARY_DAY_SUM.label("beneficiary"),
                    PHARMACY_OUTSTANDING_SUM.label("outstanding"))
# The same for psycopg's own connection, sent in one pipeline with the decision lock
_BOTH_SUMS_ON_POSTGRES = _BOTH_SUMS.compile(dialect=psycopg.dialect())  # type: ignore[no-untyped-call]


def decision_lock(finess: str) -> str:
    """The lock a pharmacy's receipt decisions take, one transaction at a time, so that
    two instances cannot both pass its outstanding cap."""
    return f"receipts:{finess}"


def lock_decisions(session: UnitOfWork, finess: str, nir_hash: str,
                   service_date: date) -> None:
    """Hold the pharmacy's decision lock until the transaction ends. On PostgreSQL, when
    this transaction did not hold it yet, both stored sums the decision needs are read
    with the lock in one round trip (the read still runs once the lock is granted), and
    handed to `exposure_of_claim` (`seed_exposure`). Later claims of the pharmacy in the
    same transaction read them with the intake's one statement
    (`gateway.claims.repository.read_for_intake`)."""
    key = decision_lock(finess)
    if session.holds(key):  # serialized (SQLite), or taken earlier in this transaction
        return
    row = session.lock_then_first(key, str(_BOTH_SUMS_ON_POSTGRES), {
        **_BOTH_SUMS_ON_POSTGRES.params, "beneficiary_hash": nir_hash,
        "service_date": service_date, "finess": finess})
    if row is not None:
        seed_exposure(session, nir_hash, service_date, finess, beneficiary=int(row[0]),
                      outstanding=int(row[1]))


def seed_exposure(session: UnitOfWork, nir_hash: str, service_date: date, finess: str, *,
                  beneficiary: int, outstanding: int) -> None:
    """Hand over both stored sums, read along with another query, so that
    `exposure_of_claim` in the same transaction needs no statement of its own: one
    statement fewer per queued claim on SQLite's single writer."""
    session.remember(("beneficiary", nir_hash, service_date), lambda: beneficiary)
    session.remember(("outstanding", finess), lambda: outstanding)


def exposure_of_claim(session: UnitOfWork, nir_hash: str, service_date: date,
                      finess: str) -> tuple[int, int]:
    """AMC cents promised to this person for this service date, and outstanding at this
    pharmacy: stored (`BENEFICIARY_DAY_SUM`, `PHARMACY_OUTSTANDING_SUM`) plus the receipts
    staged and not yet inserted. Whichever stored sum is not known yet in this transaction
    is read with the other in one statement (on PostgreSQL, which reads them after the
    pharmacy's lock, one round trip instead of two)."""
    read: list[Any] = []  # the one row, once read

    def both() -> Any:
        if not read:
            read.append(session.connection().execute(_BOTH_SUMS, {
                "beneficiary_hash": nir_hash, "service_date": service_date,
                "finess": finess}).one())
        return read[0]

    beneficiary = session.remember(("beneficiary", nir_hash, service_date),
                                   lambda: int(both().beneficiary))
    pharmacy = session.remember(("outstanding", finess), lambda: int(both().outstanding))
    staged = session.staged(Receipt)
    return (beneficiary + sum(r.amc_cents for r in staged if r.beneficiary_hash == nir_hash
                              and r.service_date == service_date),
            pharmacy + sum(r.amc_cents for r in staged if r.finess == finess))


def outstanding_by_operator(session: UnitOfWork, finess: str | None = None) -> dict[str, int]:
    """Open receipts' AMC cents per operator, for one pharmacy or all; operators owed
    nothing are left out."""
    query = select(ReceiptExposure.operator, func.sum(ReceiptExposure.outstanding_cents)).where(
        col(ReceiptExposure.outstanding_cents) != 0)
    if finess is not None:
        query = query.where(col(ReceiptExposure.finess) == finess)
    return {op: int(total)
            for op, total in session.exec(query.group_by(ReceiptExposure.operator)).all()}


def of_claims(session: UnitOfWork, claim_ids: Iterable[str]) -> dict[str, Receipt]:
    ids = list(claim_ids)
    if not ids:
        return {}
    rows = session.exec(select(Receipt).where(col(Receipt.claim_id).in_(ids))).all()
    return {row.claim_id: row for row in rows}


# Built once: built per call, with its cache key, this statement cost ~4 times what
# running it costs, and it runs for every claim sent that was given a receipt.
_MOVE_OPEN = update(_RECEIPTS).where(
    _RECEIPTS.c.claim_id == bindparam("w_claim_id"), _RECEIPTS.c.status == OPEN,
).values(status=bindparam("status"), updated_at=bindparam("updated_at")).returning(
    _RECEIPTS.c.id)


_CLAIMS = table_of(Claim)
# The same move run ahead by a sender's write group (PostgreSQL), just after the claim's
# own guarded UPDATE: only if that UPDATE wrote the claim, as this sender answered it at
# the instant it stamped; else the claim had moved, and the general path follows it.
_MOVE_OPEN_AFTER_ANSWER = _MOVE_OPEN.where(exists().where(
    _CLAIMS.c.id == bindparam("w_claim_id"), _CLAIMS.c.status == bindparam("w_claim_status"),
    _CLAIMS.c.updated_at == bindparam("w_answered_at")))
_MOVE_OPEN_AFTER_ANSWER_ON_POSTGRES = _MOVE_OPEN_AFTER_ANSWER.compile(
    dialect=psycopg.dialect())  # type: ignore[no-untyped-call]


def move_open(session: UnitOfWork, claim_id: str, new_status: str, now: datetime) -> str | None:
    """Move the claim's receipt to `new_status` if it is still open, in one statement;
    its id, or None when there was none open. Its write group may have run it ahead
    (`move_open_ahead`)."""
    row = session.changed_returning(_MOVE_OPEN, {
        "w_claim_id": claim_id, "status": new_status, "updated_at": now},
        key=_move_key(claim_id, new_status, now))
    return None if row is None else str(row[0])


def move_open_ahead(claim_id: str, new_status: str, now: datetime, *,
                    claim_status: str) -> Ahead:
    """`move_open`, for a sender's write group to run ahead right after the claim's
    guarded UPDATE (`claims.repository.update_leased_ahead`), which answered the claim
    `claim_status` at `now`: it moves the receipt only if that UPDATE wrote the claim."""
    compiled = _MOVE_OPEN_AFTER_ANSWER_ON_POSTGRES
    return Ahead(_move_key(claim_id, new_status, now), str(compiled), {
        **compiled.params, "w_claim_id": claim_id, "status": new_status, "updated_at": now,
        "w_claim_status": claim_status, "w_answered_at": now}, writes=True)


def _move_key(claim_id: str, new_status: str, now: datetime) -> tuple[Any, ...]:
    return ("receipts.move_open", claim_id, new_status, now)


def of_claim(session: UnitOfWork, claim_id: str) -> Receipt | None:
    return session.exec(select(Receipt).where(col(Receipt.claim_id) == claim_id)).first()


def accepted_claims_of(
    session: UnitOfWork, finess: str, beneficiary_hash: str, insurer_number: str,
    since: datetime,
) -> list[Claim]:
    """This pharmacy's recent accepted claims: evidence of rights when its rights cache
    has no answer."""
    return list(session.exec(
        select(Claim).where(col(Claim.finess) == finess,
                            col(Claim.beneficiary_hash) == beneficiary_hash,
                            col(Claim.insurer_number) == insurer_number,
                            col(Claim.status) == "accepted", col(Claim.updated_at) >= since)
        .order_by(col(Claim.updated_at).desc()).limit(5)
    ).all())
