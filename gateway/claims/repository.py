"""Every query on claims and their history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, or_, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import psycopg
from sqlmodel import col, select
from ulid import ULID

from gateway.events import notifier
from gateway.keys import repository as keys_repository
from gateway.queue import repository as queue_repository
from gateway.receipts import repository as receipts_repository
from gateway.storage.ids import new_ulid
from gateway.storage.models import Claim, ClaimHistory, Event, new_row, table_of, utcnow
from gateway.storage.unit import Ahead, UnitOfWork


@dataclass(frozen=True, slots=True)
class IntakeRead:
    duplicates: list[Claim]  # claims of this pharmacy with this key or invoice number
    key_row: Any  # the submitting API key's columns, None for no such key (or KEY_NOT_READ)


def read_for_intake(
    session: UnitOfWork, *, finess: str, invoice_number: str, idempotency_key: str | None,
    exposure_of: tuple[str, date] | None = None, key_id: str | None = None,
    operator: str | None = None,
) -> IntakeRead:
    """What storing a new claim reads, in one statement: its duplicates (claims of this
    pharmacy holding this idempotency key or invoice number) and, with `key_id`, the
    submitting API key's row (`gateway.keys.repository.KEY_ROW_COLUMNS`), which the
    intake confirms once per transaction.

    `exposure_of` (beneficiary hash, service date): the same statement also reads what
    that beneficiary has been promised that day, and what the pharmacy has outstanding,
    for the receipt policy that follows, when the transaction is serialized or already
    holds the pharmacy's receipt decision lock (what it reads then stays true until it
    commits; otherwise the policy reads it with that lock,
    `gateway.receipts.repository.lock_decisions`). `operator`: it also reads whether that
    operator is paused (`gateway.queue.repository.is_paused` then asks nothing more in
    this transaction).

    One statement, not four: on SQLite every statement runs on the single writer, and
    on PostgreSQL each is a round trip that every claim of a write group waits for. Its
    row is remembered while the transaction's rows are staged, so the group may read it
    ahead (`intake_ahead`).
    """
    for staged in session.staged(Claim):
        if staged.finess == finess and (
                staged.invoice_number == invoice_number
                or (idempotency_key is not None and staged.idempotency_key == idempotency_key)):
            session.require_flushed()  # stored earlier in this transaction: ask the database
    sums_of = (exposure_of if exposure_of is not None
               and session.holds(receipts_repository.decision_lock(finess)) else None)
    params = _intake_params(finess, invoice_number, idempotency_key, key_id, operator, sums_of)
    sums = sums_of is not None
    row = session.remember(_intake_key(params), lambda: session.first(
        _INTAKE_READS[key_id is not None, sums], params))
    key_row: Any = keys_repository.KEY_NOT_READ if key_id is None else row
    if row is None:  # asked with a key, and there is no such key: nothing else matters
        return IntakeRead([], None)
    if operator is not None:
        queue_repository.seed_paused(session, operator, row.paused)
    if sums:
        receipts_repository.seed_exposure(
            session, params["beneficiary_hash"], params["service_date"], finess,
            beneficiary=int(row.exposure), outstanding=int(row.outstanding))
    if row.duplicate is None:  # nearly every claim is new: whole claims only when one exists
        return IntakeRead([], key_row)
    clauses = [col(Claim.invoice_number) == invoice_number]
    if idempotency_key is not None:
        clauses.append(col(Claim.idempotency_key) == idempotency_key)
    result = session.exec(
        select(Claim).where(col(Claim.finess) == finess, or_(*clauses))
    )
    return IntakeRead(list(result.all()), key_row)


_DUPLICATE_ID = core_select(col(Claim.id)).where(
    col(Claim.finess) == bindparam("finess"),
    or_(col(Claim.invoice_number) == bindparam("invoice_number"),
        col(Claim.idempotency_key) == bindparam("idempotency_key")),
).limit(1).scalar_subquery().label("duplicate")
_PAUSED = queue_repository.PAUSED_FLAG.label("paused")
_SUMS = (receipts_repository.BENEFICIARY_DAY_SUM.label("exposure"),
         receipts_repository.PHARMACY_OUTSTANDING_SUM.label("outstanding"))


def intake_ahead(
    *, finess: str, invoice_number: str, idempotency_key: str | None,
    exposure_of: tuple[str, date] | None = None, key_id: str | None = None,
    operator: str | None = None,
) -> Ahead:
    """`read_for_intake`'s statement for the same arguments, to be read ahead by the write
    group on PostgreSQL: after the pharmacy's receipt decision lock when it reads the
    exposure, as `read_for_intake` then will."""
    params = _intake_params(finess, invoice_number, idempotency_key, key_id, operator,
                            exposure_of)
    compiled = _INTAKE_READS_ON_POSTGRES[key_id is not None, exposure_of is not None]
    return Ahead(
        _intake_key(params), str(compiled), {**compiled.params, **params},
        lock=None if exposure_of is None else receipts_repository.decision_lock(finess))


def _intake_params(finess: str, invoice_number: str, idempotency_key: str | None,
                   key_id: str | None, operator: str | None,
                   sums_of: tuple[str, date] | None) -> dict[str, Any]:
    params: dict[str, Any] = {"finess": finess, "invoice_number": invoice_number,
                              "idempotency_key": idempotency_key, "key_id": key_id,
                              "operator": operator}
    if sums_of is not None:
        params["beneficiary_hash"], params["service_date"] = sums_of
    return params


def _intake_key(params: dict[str, Any]) -> tuple[Any, ...]:
    return ("claims.intake", *params.values())


def _intake_read(with_key: bool, with_sums: bool) -> Select[Any]:
    columns = (_DUPLICATE_ID, _PAUSED, *(_SUMS if with_sums else ()))
    if not with_key:
        return core_select(*columns)
    return core_select(*keys_repository.KEY_ROW_COLUMNS, *columns).where(
        keys_repository.KEY_ID_MATCHES)


# Built once: constructing and caching a statement per claim cost more than running it.
_INTAKE_READS = {(key, sums): _intake_read(key, sums) for key in (False, True)
                 for sums in (False, True)}
_INTAKE_READS_ON_POSTGRES = {  # psycopg's own words, for the pipeline
    variant: read.compile(dialect=psycopg.dialect())  # type: ignore[no-untyped-call]
    for variant, read in _INTAKE_READS.items()}


def load(session: UnitOfWork, claim_id: str) -> Claim:
    """A claim known to exist (claims are never deleted)."""
    claim = session.get(Claim, claim_id)
    if claim is None:
        raise LookupError(f"claim {claim_id} vanished")
    return claim


def get_own(session: UnitOfWork, *, claim_id: str, finess: str) -> Claim | None:
    result = session.exec(
        select(Claim).where(col(Claim.id) == claim_id, col(Claim.finess) == finess)
    )
    return result.first()


# Most of a pharmacy's claims end accepted: a page of those is found soonest walking its
# ids newest first. Any other status may be rare, or absent, at a pharmacy (one that never
# cancels): that walk would read its whole history for a page. Those are read from an index
# by status, then sorted: at worst every claim of that status the pharmacy has.
WALKED_STATUS = "accepted"
SINCE_ID_MARGIN = timedelta(minutes=5)  # a stalled process, a clock slewed: never a claim lost


def first_id_at(since: datetime) -> str:
    """The lowest id a claim created at `since` or later can have. Claim ids are ULIDs
    (`claims.service.new_claim_id`), which sort by the millisecond they were drawn, drawn
    just before the claim's `created_at` is read: SINCE_ID_MARGIN covers that gap."""
    drawn = max(0, int((since - SINCE_ID_MARGIN).timestamp() * 1000))
    return f"clm_{ULID.from_bytes(drawn.to_bytes(6, 'big') + bytes(10))}"


def list_own(
    session: UnitOfWork,
    *,
    finess: str,
    status: str | None,
    operator: str | None,
    since: datetime | None,
    before_id: str | None,
    limit: int,
) -> list[Claim]:
    query = select(Claim).where(col(Claim.finess) == finess)
    if status:
        query = query.where(col(Claim.status) == status)
    if operator:
        query = query.where(col(Claim.operator) == operator)
    if since:  # the id bound keeps the read to the claims since then (ix_claims_finess_id)
        query = query.where(col(Claim.created_at) >= since, col(Claim.id) >= first_id_at(since))
    if before_id:
        query = query.where(col(Claim.id) < before_id)
    newest_first: ColumnElement[str] = _CLAIMS.c.id
    if status and status != WALKED_STATUS:  # by an expression: no index gives this order,
        newest_first = _CLAIMS.c.id + ""  # so both planners take an index by status
    result = session.exec(query.order_by(newest_first.desc()).limit(limit))
    return list(result.all())


def history(session: UnitOfWork, claim_id: str) -> list[ClaimHistory]:
    result = session.exec(
        select(ClaimHistory)
        .where(col(ClaimHistory.claim_id) == claim_id)
        .order_by(col(ClaimHistory.id))
    )
    return list(result.all())


EVENT_STATUSES = frozenset({"accepted", "rejected", "queued", "failed", "cancelled",
                            "exported"})


def record(
    session: UnitOfWork, claim: Claim, status: str, detail: str | None = None
) -> ClaimHistory:
    """Move a claim to `status`, append the step to its history and, when the status
    changes to one the pharmacy is told about, write the event (the outbox) in the
    caller's transaction."""
    changed = claim.status != status
    claim.status = status
    claim.updated_at = utcnow()
    session.add(claim)
    return add_step(session, claim, status, detail, changed=changed)


def add_step(session: UnitOfWork, claim: Claim, status: str, detail: str | None, *,
             changed: bool) -> ClaimHistory:
    """The history step of a move to `status` made at `claim.updated_at`, and its event
    when the status `changed` to one the pharmacy is told about."""
    step = new_row(ClaimHistory, claim_id=claim.id, status=status, at=claim.updated_at,
                   detail=detail)
    session.add(step)
    if changed and status in EVENT_STATUSES:
        add_event(session, finess=claim.finess, type_=f"claim.{status}", claim_id=claim.id,
                  at=claim.updated_at)
    return step


def add_history(session: UnitOfWork, claim: Claim, detail: str) -> None:
    """A step that does not change the claim's status (receipts, cancellation requests)."""
    session.add(new_row(ClaimHistory, claim_id=claim.id, status=claim.status,
                           at=utcnow(), detail=detail[:500]))


def add_event(
    session: UnitOfWork, *, finess: str, type_: str, claim_id: str | None, at: datetime
) -> None:
    session.add(new_row(Event, event_id=f"evt_{new_ulid()}", finess=finess, type=type_,
                           claim_id=claim_id, at=at))
    notifier.note(session, finess)  # wakes the pharmacy's long-polls once committed


_CLAIMS = table_of(Claim)
# Built once: constructing and caching a statement per claim cost more than running it.
_ANSWERED = frozenset({"status", "attempts", "first_http_status", "updated_at", "lease_owner",
                       "lease_until", "maybe_sent", "last_error", "amc_covered_cents",
                       "operator_reference", "rejection_code", "rejection_label"})
_UPDATE_LEASED = update(_CLAIMS).where(
    _CLAIMS.c.id == bindparam("w_id"), _CLAIMS.c.status == "pending",
    _CLAIMS.c.lease_owner == bindparam("w_owner"),
    _CLAIMS.c.lease_until == bindparam("w_until"),
).values({name: bindparam(name) for name in sorted(_ANSWERED)}).returning(_CLAIMS.c.id)
_UPDATE_LEASED_ON_POSTGRES = _UPDATE_LEASED.compile(  # psycopg's own words, for the pipeline
    dialect=psycopg.dialect())  # type: ignore[no-untyped-call]


def update_leased(session: UnitOfWork, claim_id: str, *, owner: str, lease_until: datetime,
                  values: dict[str, Any]) -> bool:
    """Write an answer's `values` (every column of `_ANSWERED`) to a claim still pending
    under exactly this lease (its owner and end); False, changing nothing, when it is not.
    Its write group may have run it ahead (`update_leased_ahead`)."""
    params = _leased_params(claim_id, owner, lease_until, values)
    return session.changed_returning(_UPDATE_LEASED, params, key=_leased_key(params)) is not None


def update_leased_ahead(claim_id: str, *, owner: str, lease_until: datetime,
                        values: dict[str, Any]) -> Ahead:
    """`update_leased`'s UPDATE, for its write group to run ahead (PostgreSQL): no other
    work of the group can change a claim under this sender's own lease."""
    params = _leased_params(claim_id, owner, lease_until, values)
    return Ahead(_leased_key(params), str(_UPDATE_LEASED_ON_POSTGRES),
                 {**_UPDATE_LEASED_ON_POSTGRES.params, **params}, writes=True)


def _leased_params(claim_id: str, owner: str, lease_until: datetime,
                   values: dict[str, Any]) -> dict[str, Any]:
    return {**{name: values.get(name) for name in _ANSWERED},
            "w_id": claim_id, "w_owner": owner, "w_until": lease_until}


def _leased_key(params: dict[str, Any]) -> tuple[Any, ...]:
    return ("claims.update_leased", params["w_id"], params["w_owner"], params["w_until"])
