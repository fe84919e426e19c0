"""`gateway demo`: the gateway, two simulated operators and a Pro Santé Connect stand-in
in one process, on SQLite, in development mode.

Everything listens on 127.0.0.1 only: the gateway on `--port`, the operators'
simulators on the next two ports, the PSC simulator on the third. Keys are created
afresh at each start and printed with a curl; so are two console accounts (a
pharmacist and an operations person) with a password and an enrolled second factor,
whose current codes the demo's login page shows (development only).
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from joserfc.jwk import OKPKey

from adapters.simulator import create_simulator
from adapters.simulator_batches import BatchKeys
from gateway.cli.users import accounts_of
from gateway.demo.controls import DemoControls, mount
from gateway.demo.samples import DEMO_FINESS, sample_claim
from gateway.identity.credentials import CredentialKeys
from gateway.identity.psc_simulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    create_psc_simulator,
)
from gateway.keys.admin import create_key
from gateway.main import create_app, settle_heap
from gateway.security.keyring import load_credential_key
from gateway.settings import Settings
from gateway.storage.migrate import upgrade

DEMO_OPERATORS = (("opera", ["80*", "123456789"], "card"), ("santex", ["90*"], "cached_rights"))
DEMO_PEOPLE = (  # role, name, e-mail, scope
    ("pharmacist", "Camille Durand", "pharmacien@demo.invalid", DEMO_FINESS),
    ("operations", "Sam Exploitation", "exploitation@demo.invalid", None),
)


def bound_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def demo_batch_keys(public_url: str) -> dict[str, BatchKeys]:
    """Each simulated operator's hand-over key pairs, made afresh at each start and kept
    in memory only; the simulators fetch the gateway's JWKS to check its batches."""
    return {name: BatchKeys(OKPKey.generate_key("X25519").as_dict(private=True),
                            OKPKey.generate_key("Ed25519").as_dict(private=True),
                            f"{public_url}/.well-known/jwks.json")
            for name, _, _ in DEMO_OPERATORS}


def public_half(jwk: dict[str, Any]) -> dict[str, str]:
    return {name: str(value) for name, value in jwk.items() if name != "d"}


def demo_settings(data_dir: Path, port: int, simulator_ports: dict[str, int],
                  psc_port: int | None = None,
                  batch_keys: dict[str, BatchKeys] | None = None) -> Settings:
    psc = ({"issuer": f"http://127.0.0.1:{psc_port}", "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET} if psc_port else {})
    return Settings(
        environment="development",
        database_url=f"sqlite:///{data_dir / 'gateway.db'}",
        public_url=f"http://127.0.0.1:{port}",
        data_dir=data_dir,
        # sections as dicts, as a config file gives them, for pydantic to validate: hence the
        # ignores below (mypy expects the section models)
        pro_sante_connect=psc,  # type: ignore[arg-type]
        operators=[
            {"name": name, "adapter": "reference", "insurers": insurers,  # type: ignore[misc]
             "base_url": f"http://127.0.0.1:{simulator_ports[name]}", "provisional": provisional,
             "timeout_s": 1.0, "deadline_s": 2.0, **({
                 "handover_encryption_key": public_half(keys.decryption_key),
                 "handover_ack_key": public_half(keys.signing_key)}
                 if (keys := (batch_keys or {}).get(name)) else {})}
            for name, insurers, provisional in DEMO_OPERATORS
        ],
    )


def demo_accounts(settings: Settings) -> list[tuple[str, str, str, str]]:
    """The demo's two people, created or reset: (role, e-mail, password, TOTP secret).

    Their password is set and their second factor enrolled here, so that logging in
    takes two minutes; the login page shows their current codes (development only)."""
    from gateway.audit.trail import cli_actor
    from gateway.identity import second_factor, sessions, users
    from gateway.identity.passwords import hash_password, one_time_password
    from gateway.storage.db import Database
    from gateway.storage.unit import UnitOfWork

    accounts = accounts_of(settings)
    created: list[tuple[str, str, str, str]] = []

    def ensure(session: UnitOfWork) -> None:
        for role, name, email, finess in DEMO_PEOPLE:
            user = users.by_email(session, accounts.cipher, email)
            if user is None:
                user, _ = accounts.create(session, cli_actor(), role=role, name=name,
                                          email=email, finess=finess)
            password, secret = one_time_password(), second_factor.new_totp_secret()
            user.password_hash, user.password_one_time = hash_password(password), False
            user.totp_secret_enc = accounts.credentials.seal(
                secret.encode(), context=f"totp:{user.id}")
            user.totp_enabled, user.disabled_at, user.locked_at = True, None, None
            user.failed_logins, user.recovery_codes = 0, "[]"
            users.seal(user, accounts.credentials)
            session.add(user)
            sessions.end_all(session, user.id, accounts.credentials)
            created.append((role, email, password, secret))

    db = Database(settings.database_url)
    try:
        db.write_now(ensure)
    finally:
        db.engine.dispose()
    return created


def banner(settings: Settings, pharmacy_key: str, operations_key: str,
           simulator_ports: dict[str, int],
           people: list[tuple[str, str, str, str]] | None = None) -> str:
    invoice = datetime.now(UTC).strftime("D%y%m%d%H%M%S")
    body = json.dumps(sample_claim(invoice))
    sims = "\n".join(f"  {name}: http://127.0.0.1:{port}  (POST /_faults to break it)"
                     for name, port in simulator_ports.items())
    logins = "\n".join(f"  {role + ':':<12} {email}   password: {password}"
                       for role, email, password, _ in people or [])
    psc = settings.pro_sante_connect
    psc_line = (f"\n  or \"Se connecter avec Pro Santé Connect\" (a simulator at {psc.issuer}: "
                f"pick Camille Durand)" if psc.enabled else "")
    return f"""
Tiers-payant gateway demo — {settings.public_url}   (Ctrl-C to stop)
DEVELOPMENT MODE: keys generated under {settings.data_dir}/, demo accounts and codes
printed and shown below. Never run it like this with real data.
  console:         {settings.public_url}/console/
Console accounts (the login page then asks for a six-digit code: in this demo
only, it shows each account's current code, so no phone is needed):
{logins}{psc_line}
  API docs:        {settings.public_url}/docs
  database:        {settings.database_url}
  pharmacy key:    {pharmacy_key}   (FINESS {DEMO_FINESS})
  operations key:  {operations_key}
Simulated operators:
{sims}

Submit a claim (paste it; paste it again to see the idempotent replay):

curl -s -X POST {settings.public_url}/v1/claims \\
  -H 'Authorization: Bearer {pharmacy_key}' -H 'Content-Type: application/json' \\
  -d '{body}'

Take opera down (or "hang", "error", "flaky", "ambiguous"), submit claims with other
invoice numbers (202, queued), watch the breaker and the queue, then bring it back:
curl -s -X POST http://127.0.0.1:{simulator_ports['opera']}/_faults \\
  -H 'Content-Type: application/json' -d '{{"mode": "down"}}'
curl -s {settings.public_url}/v1/operators -H 'Authorization: Bearer {operations_key}'
curl -s -X POST http://127.0.0.1:{simulator_ports['opera']}/_faults \\
  -H 'Content-Type: application/json' -d '{{"mode": "ok"}}'
Batch hand-over (docs/handover.md): pause opera, queue claims, export a batch from
the console's operator page, POST the file to opera's /_batches (its answer is the
signed acknowledgement), then upload that answer on the same page.
Events of the pharmacy:
curl -s '{settings.public_url}/v1/events?wait=25' \\
  -H 'Authorization: Bearer {pharmacy_key}'
"""


async def run_demo(*, port: int, data_dir: Path) -> None:
    # The simulators sit next to the gateway's port so their fault switches are easy to find.
    sockets = {name: bound_socket(port + offset)
               for offset, (name, _, _) in enumerate(DEMO_OPERATORS, start=1)}
    ports = {name: sock.getsockname()[1] for name, sock in sockets.items()}
    psc_socket = bound_socket(port + len(DEMO_OPERATORS) + 1)
    psc_port = psc_socket.getsockname()[1]
    gateway_socket = bound_socket(port)
    batch_keys = demo_batch_keys(f"http://127.0.0.1:{port}")
    settings = demo_settings(data_dir, port, ports, psc_port, batch_keys)
    credentials = CredentialKeys(load_credential_key(settings))
    await asyncio.to_thread(upgrade, settings.database_url, credentials)
    people = await asyncio.to_thread(demo_accounts, settings)
    _, pharmacy_key = create_key(settings, role="pharmacy", finess=DEMO_FINESS,
                                 label="demo pharmacy")
    _, operations_key = create_key(settings, role="operations", label="demo operations")
    simulators = {name: create_simulator(name) for name, _, _ in DEMO_OPERATORS}
    for name, simulator in simulators.items():
        simulator.state.batch_keys = batch_keys[name]
    servers = [
        (uvicorn.Server(uvicorn.Config(simulator, log_level="warning",
                                      timeout_graceful_shutdown=1)), sockets[name])
        for name, simulator in simulators.items()
    ]
    servers.append((uvicorn.Server(uvicorn.Config(
        create_psc_simulator(settings.pro_sante_connect.issuer), log_level="warning",
        timeout_graceful_shutdown=1)), psc_socket))
    app = create_app(settings)
    mount(app, DemoControls(
        simulators={name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
        finess=DEMO_FINESS, insurers={"opera": "801234567", "santex": "901234567"},
        second_factors={email: secret for _, email, _, secret in people},
    ))
    gateway = uvicorn.Server(
        # X-Forwarded-* are believed only from `trusted_proxies` (TrustedProxyMiddleware)
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, log_config=None,
                       proxy_headers=False)
    )
    servers.append((gateway, gateway_socket))
    settle_heap()
    print(banner(settings, pharmacy_key, operations_key, ports, people), flush=True)
    await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))
