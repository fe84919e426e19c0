"""The composition root: `create_app(settings)` and the lifespan that builds everything."""

from __future__ import annotations

import asyncio
import gc
import os
import secrets
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.audit.heads import head_keys_of, run_audit_heads
from gateway.audit.trail import AuditLog
from gateway.audit.watch import TrailWatch
from gateway.claims.endpoints import router as claims_router
from gateway.console.admin import router as console_admin_router
from gateway.console.auth import router as console_auth_router
from gateway.console.errors import install_console_errors
from gateway.console.handover import router as console_handover_router
from gateway.console.operations import router as console_operations_router
from gateway.console.pharmacy import router as console_pharmacy_router
from gateway.console.psc import router as console_psc_router
from gateway.console.security import SecurityHeadersMiddleware
from gateway.console.users import router as console_users_router
from gateway.context import AppContext
from gateway.errors import Unauthorized, install_error_handlers, problem_responses
from gateway.events.endpoints import router as events_router
from gateway.events.notifier import EventHub
from gateway.fhir.endpoints import install_fhir
from gateway.handover.endpoints import router as handover_router
from gateway.identity.credentials import CredentialKeys
from gateway.identity.psc import ProSanteConnect
from gateway.keys.endpoints import router as keys_router
from gateway.observability.logs import configure_logging
from gateway.observability.metrics import LatencyMiddleware, Snapshot, render, scrape_allowed
from gateway.ops.endpoints import router as ops_router
from gateway.queue import abandoned
from gateway.queue.drain import DrainWorker
from gateway.queue.repository import depth as queue_depth
from gateway.receipts.endpoints import router as receipts_router
from gateway.receipts.issuer import ReceiptIssuer
from gateway.receipts.repository import outstanding_by_operator
from gateway.receipts.signing import ReceiptSigner
from gateway.resilience.operators import build_directory
from gateway.resilience.prober import run_prober
from gateway.resilience.shared import run_breaker_sync
from gateway.rights.endpoints import router as rights_router
from gateway.security.crypto import Cipher
from gateway.security.envelope import DataKeyStore
from gateway.security.keyring import (
    load_audit_head_key,
    load_credential_key,
    load_keyring,
    load_redis_key,
)
from gateway.security.limit_store import DatabaseWindows
from gateway.security.proxies import TrustedProxyMiddleware
from gateway.security.ratelimit import RateLimiter
from gateway.settings import OperatorSettings, Settings
from gateway.storage.db import Database
from gateway.storage.deployment import ensure_deployment_id, redis_namespace
from gateway.storage.health import DatabaseUnavailable, probe_write
from gateway.storage.retention import run_retention
from gateway.storage.sharing import start_sharing, stop_sharing
from gateway.web.apidocs import install_api_docs
from gateway.web.middleware import BodyLimitMiddleware
from gateway.web.serving import StoppingMiddleware, StopSignal
from gateway.webhooks.worker import run_webhooks

log = structlog.get_logger(__name__)
STATIC_DIR = Path(__file__).with_name("static")
DESCRIPTION = """A tiers-payant claims gateway between pharmacy software and AMC operators.

Authenticate with `Authorization: Bearer <key>`. Errors are `application/problem+json`.
"""


GC_THRESHOLDS = (20_000, 20, 20)  # CPython's default is (700, 10, 10)


def settle_heap() -> None:
    """For a serving process, once its app is built: what exists now (the app, the ORM
    metadata, templates) lives as long as the process, so the cyclic collector stops
    walking it (`gc.freeze`), and young objects are collected less often. Full
    collections of that heap every few hundred requests were the queued claims' p99
    (bench/outage_throughput.py: p99 ~170 -> ~90 ms, ~10 % more claims/s)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def build_context(
    settings: Settings, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
) -> AppContext:
    keyring = load_keyring(settings)
    db = Database(settings.database_url)
    cipher = Cipher(keyring, DataKeyStore(db, keyring))
    signer = ReceiptSigner(keyring.signing_key, keyring.previous_signing_keys)
    audit_log = AuditLog.from_settings(settings)
    return AppContext(
        settings=settings,
        db=db,
        cipher=cipher,
        receipts=ReceiptIssuer(settings, cipher, signer, audit_log),
        operators=build_directory(settings, transports),
        limiter=RateLimiter({
            "rights": settings.limits.rights_per_minute,
            "claims": settings.limits.claims_per_minute,
            "receipts": settings.limits.receipts_per_minute,
            "reads": settings.limits.reads_per_minute,
        }, DatabaseWindows(db), namer=lambda raw: cipher.index("rate-limit", raw)),
        events=EventHub(db.engine),
        audit_log=audit_log,
        trail=TrailWatch(db, audit_log, lambda: head_keys_of(settings)),
        credentials=CredentialKeys(load_credential_key(settings)),
        psc=(ProSanteConnect(settings.pro_sante_connect, settings.public_url,
                             transport=(transports or {}).get("pro_sante_connect"))
             if settings.pro_sante_connect.enabled else None),
        instance_id=f"{socket.gethostname()[:20]}-{os.getpid()}-{secrets.token_hex(3)}",
    )


async def requeue_held_claims(context: AppContext) -> None:
    """Stopping: what this process still holds `pending` goes back to the queue now, looked
    up before any resend, instead of waiting for its lease to expire."""
    receipts, owner = context.receipts, context.instance_id

    def settings_of(name: str) -> OperatorSettings | None:
        operator = context.operators.get(name)
        return operator.settings if operator else None

    try:
        count = await context.db.write(
            lambda session: abandoned.requeue_owned(session, owner, receipts, settings_of))
    except DatabaseUnavailable:
        log.warning("shutdown.claims_left_pending")  # their leases expire; the sweep takes them
        return
    if count:
        log.info("shutdown.claims_requeued", claims=count)


def create_app(
    settings: Settings,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    configure_logs: bool = True,
    run_workers: bool = True,
) -> FastAPI:
    """The gateway app; `transports` lets tests route an operator to an in-process app."""
    if configure_logs:
        configure_logging(settings.log_level)
    load_keyring(settings)  # fail at creation, not at the first request, on a bad key
    AuditLog.from_settings(settings)  # the audit key too
    load_credential_key(settings)  # and the credentials' pepper
    load_audit_head_key(settings)  # the audit heads' own key
    redis_key = load_redis_key(settings)  # with redis_url: the breaker messages' HMAC key

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context = build_context(settings, transports)
        app.state.context = context
        stopping = asyncio.Event()
        tasks = []
        # this database's deployment id namespaces every Redis key and channel; read before
        # any task starts, so a failure here leaves none running
        shares = run_workers and bool(settings.redis_url) and redis_key is not None
        deployment = await context.db.write(ensure_deployment_id) if shares else ""
        # rate limits, long-poll places and wake-ups, shared by every instance (not workers)
        tasks.extend(await start_sharing(context, stopping))
        if run_workers:
            for operator in context.operators:
                worker = DrainWorker(context, operator)
                context.drains[operator.name] = worker
                tasks.append(asyncio.create_task(run_prober(operator, stopping)))
                tasks.append(asyncio.create_task(worker.run(stopping)))
            tasks.append(asyncio.create_task(run_webhooks(context, stopping)))
            tasks.append(asyncio.create_task(run_audit_heads(context, stopping)))
            tasks.append(asyncio.create_task(context.trail.run(stopping)))
            tasks.append(asyncio.create_task(run_retention(context, stopping)))
            if shares and redis_key is not None:
                tasks.append(asyncio.create_task(run_breaker_sync(
                    context.operators, settings.redis_url, context.instance_id, stopping,
                    prefix=redis_namespace(deployment), key=redis_key)))
        try:
            yield
        finally:
            app.state.stop_signal.set()
            stopping.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await requeue_held_claims(context)
            await stop_sharing(context)
            await context.operators.aclose()
            await context.db.dispose()

    app = FastAPI(
        title="Tiers-payant fallback claims gateway",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # install_api_docs serves /docs without a CDN, or not at all
        redoc_url=None,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(LatencyMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.state.stop_signal = StopSignal()
    app.add_middleware(StoppingMiddleware, signal=app.state.stop_signal)
    # added last, so it runs first: every layer below sees the corrected client and scheme
    app.add_middleware(TrustedProxyMiddleware, trusted=settings.trusted_proxies)
    install_error_handlers(app)
    install_console_errors(app)
    app.include_router(claims_router)
    app.include_router(rights_router)
    app.include_router(keys_router)
    app.include_router(events_router)
    app.include_router(ops_router)
    app.include_router(handover_router)
    app.include_router(receipts_router)
    app.include_router(console_auth_router)
    app.include_router(console_psc_router)
    app.include_router(console_users_router)
    app.include_router(console_pharmacy_router)
    app.include_router(console_operations_router)
    app.include_router(console_handover_router)
    app.include_router(console_admin_router)
    install_fhir(app)  # /fhir/R4/...: the FHIR face, its errors as OperationOutcomes
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_api_docs(app, settings)

    @app.get("/healthz", tags=["service"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["service"], summary="The database is reachable and writable",
             description="503 while the database fails, and while this instance stops.")
    async def readyz() -> JSONResponse:
        db = app.state.context.db
        try:
            await db.ping()
            if db.health.down:  # writes failed: a read alone passes on a full disk
                await db.write(probe_write)
        except Exception:  # noqa: BLE001 - any failure to reach the database means "not ready"
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503,
                                headers={"Retry-After": "2"})
        return JSONResponse({"status": "ok", "database": "ok"})

    @app.get("/metrics", tags=["service"], summary="Prometheus metrics (no personal data)",
             response_class=PlainTextResponse, responses=problem_responses(401),
             description="With `metrics_token` set: `Authorization: Bearer <metrics_token>`.")
    async def metrics(request: Request) -> PlainTextResponse:
        if not scrape_allowed(settings.metrics_token.get_secret_value(),
                              request.headers.get("authorization")):
            raise Unauthorized("send the metrics token as `Authorization: Bearer <token>`",
                               headers={"WWW-Authenticate": "Bearer"})
        context = app.state.context
        depth = await context.db.read(queue_depth)
        breakers = {operator.name: operator.breaker.state for operator in context.operators}
        outstanding = await context.db.read(outstanding_by_operator)
        body = render(Snapshot(depth, breakers, outstanding=outstanding))
        return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)

    return app
