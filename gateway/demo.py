"""`gateway demo`: the gateway and two simulated operators in one process, on SQLite.

Everything listens on 127.0.0.1 only: the gateway on `--port`, the simulators on
the next two ports. Keys are created afresh at each start and printed with a curl.
"""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

from adapters.simulator import create_simulator
from gateway.console.demo_controls import DemoControls
from gateway.keys_admin import create_key
from gateway.main import create_app, settle_heap
from gateway.migrate import upgrade
from gateway.settings import Settings

DEMO_FINESS = "330001231"
DEMO_OPERATORS = (("opera", ["80*", "123456789"], "card"), ("santex", ["90*"], "cached_rights"))


def bound_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def demo_settings(data_dir: Path, port: int, simulator_ports: dict[str, int]) -> Settings:
    return Settings(
        environment="development",
        database_url=f"sqlite:///{data_dir / 'gateway.db'}",
        public_url=f"http://127.0.0.1:{port}",
        data_dir=data_dir,
        operators=[
            {"name": name, "adapter": "reference", "insurers": insurers,
             "base_url": f"http://127.0.0.1:{simulator_ports[name]}", "provisional": provisional,
             "timeout_s": 1.0, "deadline_s": 2.0}
            for name, insurers, provisional in DEMO_OPERATORS
        ],
    )


def sample_claim(invoice_number: str) -> dict[str, object]:
    """A synthetic claim (valid checksums, nobody real) dated today."""
    today = datetime.now(UTC).date()
    return {
        "invoice_number": invoice_number,
        "service_date": today.isoformat(),
        "dispenser": {"finess": DEMO_FINESS},
        "prescriber": {"rpps": "10001234565"},
        "beneficiary": {"nir": "185077511512396", "birth_date": "1985-07-14", "birth_rank": 1,
                        "last_name": "Martin", "first_name": "Claire"},
        "amc": {"insurer_number": "801234567", "convention_type": "TP", "routing_criterion": "",
                "member_number": "A123456", "valid_from": f"{today.year}-01-01",
                "valid_to": f"{today.year}-12-31"},
        "lines": [{"code": "PH7", "product": "3400935955838", "quantity": 1,
                   "unit_price_cents": 800, "base_cents": 800, "amo_cents": 520,
                   "amc_cents": 280}],
    }


def banner(settings: Settings, pharmacy_key: str, operations_key: str,
           simulator_ports: dict[str, int]) -> str:
    invoice = datetime.now(UTC).strftime("D%y%m%d%H%M%S")
    body = json.dumps(sample_claim(invoice))
    sims = "\n".join(f"  {name}: http://127.0.0.1:{port}  (POST /_faults to break it)"
                     for name, port in simulator_ports.items())
    return f"""
Tiers-payant gateway demo — {settings.public_url}   (Ctrl-C to stop)
  console:         {settings.public_url}/console/  (log in with a key below)
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
curl -s -X POST http://127.0.0.1:{simulator_ports['opera']}/_faults -d '{{"mode": "down"}}'
curl -s {settings.public_url}/v1/operators -H 'Authorization: Bearer {operations_key}'
curl -s -X POST http://127.0.0.1:{simulator_ports['opera']}/_faults -d '{{"mode": "ok"}}'
Events of the pharmacy:   curl -s '{settings.public_url}/v1/events?wait=25' \
                            -H 'Authorization: Bearer {pharmacy_key}'
"""


async def run_demo(*, port: int, data_dir: Path) -> None:
    # The simulators sit next to the gateway's port so their fault switches are easy to find.
    sockets = {name: bound_socket(port + offset)
               for offset, (name, _, _) in enumerate(DEMO_OPERATORS, start=1)}
    ports = {name: sock.getsockname()[1] for name, sock in sockets.items()}
    gateway_socket = bound_socket(port)
    settings = demo_settings(data_dir, port, ports)
    await asyncio.to_thread(upgrade, settings.database_url)
    _, pharmacy_key = create_key(settings, role="pharmacy", finess=DEMO_FINESS,
                                 label="demo pharmacy")
    _, operations_key = create_key(settings, role="operations", label="demo operations")
    servers = [
        (uvicorn.Server(uvicorn.Config(create_simulator(name), log_level="warning",
                                      timeout_graceful_shutdown=1)), sockets[name])
        for name, _, _ in DEMO_OPERATORS
    ]
    app = create_app(settings)
    app.state.demo = DemoControls(
        simulators={name: f"http://127.0.0.1:{port}" for name, port in ports.items()},
        finess=DEMO_FINESS, insurers={"opera": "801234567", "santex": "901234567"},
    )
    gateway = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    )
    servers.append((gateway, gateway_socket))
    settle_heap()
    print(banner(settings, pharmacy_key, operations_key, ports), flush=True)
    await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))
