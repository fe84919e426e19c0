"""Tables. Personal data lives only in encrypted `*_enc` columns; lookups use keyed hashes.

Table models never leave the service layer: endpoints return the schemas of each
capability's `schemas.py`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    LargeBinary,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import configure_mappers
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware instants on every backend (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class TableRow(SQLModel):
    """The base of every table model: a new row not yet in any session takes its values
    straight into its instance dict, as `new_row` builds it. Through SQLModel's
    `__setattr__` each assignment also ran SQLAlchemy's change tracking and pydantic's
    checks (a queued claim's rows take ~20 assignments in the writer thread); a row no
    session holds has no change to track: it is inserted from that dict. Rows loaded
    or added to a session go the usual way."""

    def __setattr__(self, name: str, value: Any) -> None:
        state = self.__dict__.get("_sa_instance_state")
        if (state is not None and state.key is None and state.session_id is None
                and name in type(self).model_fields):
            self.__dict__[name] = value
            self.__pydantic_fields_set__.add(name)
            return
        super().__setattr__(name, value)


T = TypeVar("T", bound=SQLModel)


@cache
def _defaults(model: type[SQLModel]) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...]]:
    """A table model's plain defaults, and its (name, factory) pairs. First, the ORM's
    mappers are configured, as a model's constructor would: attribute access on an
    instance needs them, and `new_row` may build the first instance of the process."""
    configure_mappers()
    plain: dict[str, Any] = {}
    factories: list[tuple[str, Any]] = []
    for name, field in model.model_fields.items():
        if field.default_factory is not None:
            factories.append((name, field.default_factory))
        elif not field.is_required():
            plain[name] = field.default
    return plain, tuple(factories)


def new_row(model: type[T], **values: Any) -> T:
    """`model(**values)` for a new row, without the ORM's per-attribute events.

    SQLModel's constructor sets each field through pydantic and SQLAlchemy's change
    tracking (~45 µs for a receipt); a new row has no history to track, so its values
    go straight into the instance dict SQLAlchemy reads at insert (~4 µs). Queuing a
    claim builds five or six rows on SQLite's single writer thread. Same result as the
    constructor: fields set, the rest defaulted, pydantic's bookkeeping filled in.
    """
    plain, factories = _defaults(model)
    # SQLAlchemy's class manager, set when it maps the class: undeclared, as `__table__`
    row: T = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    state = row.__dict__
    state.update(plain)
    for name, factory in factories:
        if name not in values:
            state[name] = factory()
    unknown = values.keys() - model.model_fields.keys()
    if unknown:
        raise TypeError(f"{model.__name__} has no field {sorted(unknown)[0]}")
    state.update(values)
    object.__setattr__(row, "__pydantic_fields_set__", set(values))
    object.__setattr__(row, "__pydantic_extra__", None)
    object.__setattr__(row, "__pydantic_private__", None)
    return row


def fields_of(row: SQLModel) -> dict[str, Any]:
    """A row's field values, as `new_row` takes them: to build an updated copy."""
    state = row.__dict__
    return {name: state[name] for name in type(row).model_fields if name in state}


def table_of(model: type[SQLModel]) -> Table:
    """A table model's Core table, for statements without the ORM. SQLAlchemy sets
    `__table__` when it maps the class; SQLModel's type does not declare it."""
    table: Table = model.__table__  # type: ignore[attr-defined]  # see the docstring
    return table


def instant_column(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class ApiKey(TableRow, table=True):
    __tablename__ = "api_keys"

    id: str = Field(primary_key=True, max_length=32)
    secret_hash: str = Field(max_length=64)
    role: str = Field(max_length=16)
    finess: str | None = Field(default=None, max_length=9, index=True)
    operators: str | None = Field(default=None, max_length=500)
    label: str | None = Field(default=None, max_length=200)
    row_mac: str = Field(default="", max_length=64)  # see gateway.identity.credentials
    created_at: datetime = instant_column()
    revoked_at: datetime | None = instant_column(nullable=True)
    expires_at: datetime | None = instant_column(nullable=True)
    # over a rights budget: refused (403 key-suspended) until operations lift it; the MAC
    # covers both while set (gateway.security.apikeys.mac_fields)
    suspended_at: datetime | None = instant_column(nullable=True)
    suspension_reason: str | None = Field(default=None, max_length=200)


class Claim(TableRow, table=True):
    __tablename__ = "claims"
    __table_args__ = (
        UniqueConstraint("finess", "invoice_number", name="uq_claims_finess_invoice"),
        UniqueConstraint("finess", "idempotency_key", name="uq_claims_finess_idempotency_key"),
        Index("ix_claims_finess_id", "finess", "id"),
        Index("ix_claims_queue", "operator", "status", "queued_at"),
        Index("ix_claims_lease", "operator", "status", "lease_until"),
        # a beneficiary's claims at one pharmacy and insurer: the receipt policy's evidence
        # of rights when the rights cache has none (migration 0018)
        Index("ix_claims_beneficiary_rights", "beneficiary_hash", "finess", "insurer_number",
              "status", "updated_at"),
        # a pharmacy's claims by status, for the console's lists (migration 0019)
        Index("ix_claims_pharmacy_status", "finess", "status", "updated_at"),
        # the few claims whose cancellation is still to be sent (migration 0017); the
        # predicate is the query's own term, so each planner proves the query fits
        Index("ix_claims_cancellations", "operator", "updated_at",
              sqlite_where=text("cancellation_pending IS 1"),
              postgresql_where=text("cancellation_pending IS true")),
    )

    id: str = Field(primary_key=True, max_length=40)
    finess: str = Field(max_length=9)
    invoice_number: str = Field(max_length=40)
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str = Field(max_length=64)
    nir_hash: str = Field(max_length=64, index=True)
    beneficiary_hash: str = Field(max_length=64)
    operator: str = Field(max_length=64, index=True)
    insurer_number: str = Field(max_length=12)
    service_date: date
    status: str = Field(max_length=16, index=True)
    amc_requested_cents: int
    amc_covered_cents: int | None = None
    rejection_code: str | None = Field(default=None, max_length=64)
    rejection_label: str | None = Field(default=None, max_length=500)
    operator_reference: str | None = Field(default=None, max_length=128)
    first_http_status: int | None = None
    cancellation_pending: bool = False
    coverage_decision: str = Field(default="not_needed", max_length=16)
    coverage_reason: str | None = Field(default=None, max_length=40)
    coverage_json: str | None = Field(default=None, max_length=2000)  # basis and figures used
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    payload_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = instant_column()
    updated_at: datetime = instant_column()
    # The durable queue: a claim is never deleted; a lease marks who is sending it.
    queued_at: datetime | None = instant_column(nullable=True)
    next_attempt_at: datetime | None = instant_column(nullable=True)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = instant_column(nullable=True)
    maybe_sent: bool = False  # an ambiguous failure: look the claim up before resending
    replay_id: str | None = Field(default=None, max_length=40, index=True)
    data_key_id: str | None = Field(default=None, max_length=64, index=True)  # envelope key
    purged_at: datetime | None = instant_column(nullable=True)  # personal data removed


class ClaimHistory(TableRow, table=True):
    __tablename__ = "claim_history"

    id: int | None = Field(default=None, primary_key=True)
    claim_id: str = Field(foreign_key="claims.id", index=True, max_length=40)
    status: str = Field(max_length=16)
    at: datetime = instant_column()
    detail: str | None = Field(default=None, max_length=500)


class RightsCacheEntry(TableRow, table=True):
    """The last rights answer per pharmacy, beneficiary and insurer; the answer itself is
    encrypted. Per pharmacy: no pharmacy is answered from, or learns of, another's lookups."""

    __tablename__ = "rights_cache"
    __table_args__ = (
        UniqueConstraint("finess", "beneficiary_hash", "insurer_number",
                         name="uq_rights_cache_finess_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    finess: str = Field(max_length=9)
    beneficiary_hash: str = Field(max_length=64)
    insurer_number: str = Field(max_length=12)
    answer_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    as_of: datetime = instant_column(index=True)
    data_key_id: str | None = Field(default=None, max_length=64, index=True)


class RightsLookup(TableRow, table=True):
    """A person counted once in a rights budget: per scope (`key:<id>` or `finess:<F>`) and
    period (`YYYY-MM-DDTHH` for an hour, `YYYY-MM-DD` for a day, UTC), the keyed hash of
    their NIR. Shared by every instance; rows of days gone are deleted."""

    __tablename__ = "rights_lookups"
    __table_args__ = (Index("ix_rights_lookups_period", "period"),)

    scope: str = Field(primary_key=True, max_length=40)
    period: str = Field(primary_key=True, max_length=13)
    subject: str = Field(primary_key=True, max_length=64)


class Event(TableRow, table=True):
    """The outbox: written in the transaction that changes the claim, read by the feed."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_finess_id", "finess", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=40, unique=True)
    finess: str = Field(max_length=9)
    type: str = Field(max_length=32)
    claim_id: str | None = Field(default=None, max_length=40)
    at: datetime = instant_column()


class OperatorControl(TableRow, table=True):
    """Per operator: the pause (survives restarts) and the shared drain schedule."""

    __tablename__ = "operator_controls"

    operator: str = Field(primary_key=True, max_length=64)
    paused: bool = False
    paused_by: str | None = Field(default=None, max_length=32)
    pause_reason: str | None = Field(default=None, max_length=500)
    paused_at: datetime | None = instant_column(nullable=True)
    next_send_at: datetime | None = instant_column(nullable=True)


class QueueDepth(TableRow, table=True):
    """How many claims an operator has queued, pending or failed: the sum of its slots.

    Kept by database triggers on `claims` (migration 0015): every insert, status change
    (or delete) moves it in the same transaction, whatever code runs it, so the board
    and /metrics read a few rows instead of counting the queue. SQLite writes slot 0
    only; on PostgreSQL each server process writes its own slot (`pg_backend_pid() % 64`)
    so that transactions queueing claims at once do not all wait on one row. A slot's
    count may be negative (a claim queued through one slot, sent through another).
    """

    __tablename__ = "queue_depth"

    operator: str = Field(primary_key=True, max_length=64)
    status: str = Field(primary_key=True, max_length=16)  # queued|pending|failed|exported
    slot: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    claims: int = Field(default=0, sa_type=BigInteger)


class Replay(TableRow, table=True):
    __tablename__ = "replays"

    id: str = Field(primary_key=True, max_length=40)
    operator: str = Field(max_length=64, index=True)
    requested_by: str = Field(max_length=32)
    filter_json: str = Field(max_length=4000)
    count: int
    running: bool = True
    created_at: datetime = instant_column()
    finished_at: datetime | None = instant_column(nullable=True)


class HandoverBatch(TableRow, table=True):
    """A batch of queued claims handed over to an operator as a file (gateway.handover).

    `state`: `exported` until acknowledged in full (`acknowledged`) or released back to
    the queue (`released`); `digest` is the SHA-256 of its signed content, which is
    rebuilt from the database whenever the file is written again."""

    __tablename__ = "handover_batches"

    id: str = Field(primary_key=True, max_length=40)
    operator: str = Field(max_length=64, index=True)
    state: str = Field(max_length=16)
    count: int
    digest: str = Field(max_length=64)
    created_at: datetime = instant_column()
    created_by: str = Field(max_length=32)
    settled: int = 0  # claims settled by acknowledgements so far
    acks_digest: str | None = Field(default=None, max_length=64)  # the last file imported
    closed_at: datetime | None = instant_column(nullable=True)
    closed_by: str | None = Field(default=None, max_length=32)


class HandoverClaim(TableRow, table=True):
    """A claim in a batch, at its place in the file (oldest queued first)."""

    __tablename__ = "handover_claims"

    batch_id: str = Field(primary_key=True, foreign_key="handover_batches.id", max_length=40)
    claim_id: str = Field(primary_key=True, foreign_key="claims.id", max_length=40, index=True)
    position: int


class AuditEntry(TableRow, table=True):
    """Who did what to which object, and how it ended; never raw personal data."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = instant_column()
    actor: str = Field(max_length=32)
    role: str = Field(max_length=16)
    action: str = Field(max_length=64)
    object_id: str | None = Field(default=None, max_length=64)
    outcome: str = Field(max_length=32)
    details_json: str = Field(default="{}", max_length=4000)
    prev_hash: str = Field(default="", max_length=64)  # the chain: each entry covers the last
    entry_hash: str = Field(default="", max_length=64)
    entry_mac: str = Field(default="", max_length=64)  # HMAC of entry_hash: no hand-made entry


class WebhookCursor(TableRow, table=True):
    """Per webhook: the last event delivered, the next retry, and which instance sends."""

    __tablename__ = "webhook_cursors"

    key: str = Field(primary_key=True, max_length=64)  # sha256 of finess and url
    finess: str = Field(max_length=9)
    last_event_id: int = 0  # `events.id` of the last event the receiver acknowledged
    attempts: int = 0  # failed attempts at the event after it
    next_attempt_at: datetime | None = instant_column(nullable=True)
    last_error: str | None = Field(default=None, max_length=500)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = instant_column(nullable=True)
    updated_at: datetime = instant_column()


class Receipt(TableRow, table=True):
    """A provisional coverage receipt: the signed promise, and where it stands.

    No personal data: the beneficiary appears only as the keyed hash the daily cap needs,
    that of their NIR (`claims.nir_hash`, since migration 0010): another birth date or rank
    on the same NIR is the same person for the cap.
    """

    __tablename__ = "receipts"
    __table_args__ = (
        # covering: the beneficiary's daily sum reads the index alone (migration 0007)
        Index("ix_receipts_beneficiary_day", "beneficiary_hash", "service_date", "status",
              "amc_cents"),
    )

    id: str = Field(primary_key=True, max_length=40)  # rcp_ + time + 128 random bits
    claim_id: str = Field(foreign_key="claims.id", unique=True, max_length=40)
    finess: str = Field(max_length=9)
    operator: str = Field(max_length=64)
    insurer_number: str = Field(max_length=12)
    invoice_number: str = Field(max_length=40)
    beneficiary_hash: str = Field(max_length=64)
    service_date: date
    amc_cents: int
    patient_due_cents: int
    basis: str = Field(max_length=16)
    status: str = Field(max_length=16)  # provisional | honored | contested | void
    kid: str = Field(max_length=64)
    token: str = Field(max_length=2000)
    issued_at: datetime = instant_column()
    expires_at: datetime = instant_column()
    updated_at: datetime = instant_column()


class ReceiptExposure(TableRow, table=True):
    """AMC cents of a pharmacy's receipts still provisional, per operator.

    Kept by database triggers on `receipts` (migration 0008), so every insert, status
    change or delete moves it in the same transaction, whatever code runs it. The
    outstanding cap reads these few rows instead of summing every open receipt: an
    outage of days leaves a pharmacy with thousands of them.
    """

    __tablename__ = "receipt_exposure"

    finess: str = Field(primary_key=True, max_length=9)
    operator: str = Field(primary_key=True, max_length=64)
    outstanding_cents: int = Field(default=0, sa_type=BigInteger)


class User(TableRow, table=True):
    """A person with a console account. Name and e-mail only encrypted; `row_mac` covers
    everything that grants access (role, scope, password, second factor, disabling)."""

    __tablename__ = "users"

    id: str = Field(primary_key=True, max_length=32)  # usr_ + 16 hex
    role: str = Field(max_length=16)  # pharmacist | operations | admin
    finess: str | None = Field(default=None, max_length=9, index=True)
    operators: str | None = Field(default=None, max_length=500)
    rpps: str | None = Field(default=None, max_length=11, index=True)  # Pro Santé Connect
    email_index: str = Field(max_length=64, unique=True)  # keyed hash of the lowercased e-mail
    profile_enc: bytes = Field(sa_column=Column(LargeBinary, nullable=False))  # name, e-mail
    password_hash: str | None = Field(default=None, max_length=200)  # argon2id
    password_one_time: bool = True  # set by an admin: replaced at the next login
    totp_secret_enc: bytes | None = Field(
        default=None, sa_column=Column(LargeBinary, nullable=True))
    totp_enabled: bool = False
    recovery_codes: str = Field(default="[]", max_length=2000)  # JSON list of digests
    created_at: datetime = instant_column()
    disabled_at: datetime | None = instant_column(nullable=True)
    row_mac: str = Field(default="", max_length=64)
    # not covered by the MAC: counters and bookkeeping the login moves
    failed_logins: int = 0
    locked_at: datetime | None = instant_column(nullable=True)
    last_totp_step: int = Field(default=0, sa_type=BigInteger)  # a code is accepted once
    last_login_at: datetime | None = instant_column(nullable=True)


class ConsoleSession(TableRow, table=True):
    """A console login: the cookie holds a random token, the table only its peppered digest.

    `stage` is where the login stands (`password`, `enrol`, `second_factor`, then
    `active`); only an active session opens pages. `last_seen_at` moves with what the
    person does, never with the dashboard's own refresh."""

    __tablename__ = "console_sessions"

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", max_length=32, index=True)
    stage: str = Field(max_length=16)
    method: str = Field(max_length=16)  # password | psc
    csrf_token: str = Field(max_length=64)
    created_at: datetime = instant_column()
    last_seen_at: datetime = instant_column()
    ended_at: datetime | None = instant_column(nullable=True)
    row_mac: str = Field(default="", max_length=64)


class LoginThrottle(TableRow, table=True):
    """Failed console logins per client address (keyed hash), shared by every instance."""

    __tablename__ = "login_throttle"

    bucket: str = Field(primary_key=True, max_length=64)
    window_started_at: datetime = instant_column()
    failures: int = 0
    unknown_failures: int = 0  # of which naming no account: audited once per window
    reported: bool = False  # the window's aggregate audit entry is written


class RateWindow(TableRow, table=True):
    """Requests per rate-limit bucket (keyed hash of class and caller) and 5 s slot, shared
    by every instance when there is no Redis (`gateway.security.limit_store`)."""

    __tablename__ = "rate_windows"

    bucket: str = Field(primary_key=True, max_length=64)
    window_start: int = Field(primary_key=True, sa_type=BigInteger, index=True,
                              sa_column_kwargs={"autoincrement": False})  # epoch s, slot-aligned
    hits: int = 0


class LongPollSlot(TableRow, table=True):
    """One of a key's few concurrent long-polls on `/v1/events`, held until `expires_at`
    (epoch seconds) or given back; shared by every instance when there is no Redis."""

    __tablename__ = "long_poll_slots"

    bucket: str = Field(primary_key=True, max_length=64)
    slot: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    holder: str = Field(max_length=40)
    expires_at: float = Field(index=True)


class DataKey(TableRow, table=True):
    """Envelope encryption: a data key per scope (pharmacy and month), wrapped by the master key.

    Rotating re-wraps these rows and retires them (`retired_at`: still decrypts, no new
    record uses it); deleting one (crypto-shredding) makes every record it encrypted
    unreadable in this database (not in a backup taken before).
    """

    __tablename__ = "data_keys"

    id: str = Field(primary_key=True, max_length=64)
    scope: str = Field(max_length=64, index=True)  # e.g. "claims:330001231:2026-11"
    wrapped: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    master_kid: str = Field(max_length=16)
    created_at: datetime = instant_column()
    shredded_at: datetime | None = instant_column(nullable=True)
    retired_at: datetime | None = instant_column(nullable=True)  # rotated: decrypts, no new use


class Deployment(TableRow, table=True):
    """One row, made by migration 0012: the id that namespaces what this database's
    instances share outside it (Redis keys and channels, audit anchors)."""

    __tablename__ = "deployment"
    __table_args__ = (UniqueConstraint("id", name="uq_deployment_id"),)

    slot: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    id: str = Field(max_length=40)
    created_at: datetime = instant_column()


class DatabaseProbe(TableRow, table=True):
    """One row the readiness check rewrites while the database is failing: a read alone
    would pass on a full disk or a read-only SQLite file (migration 0014)."""

    __tablename__ = "database_probe"

    slot: int = Field(default=1, primary_key=True, sa_column_kwargs={"autoincrement": False})
    written_at: datetime = instant_column()


class AuditHead(TableRow, table=True):
    """A periodic Ed25519 signature of the audit chain's head, for anchoring outside."""

    __tablename__ = "audit_heads"

    id: int | None = Field(default=None, primary_key=True)
    entry_id: int
    entry_hash: str = Field(max_length=64)
    signature: str = Field(max_length=200)
    kid: str = Field(max_length=64)
    signed_at: datetime = instant_column()
