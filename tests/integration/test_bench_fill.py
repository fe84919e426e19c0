"""bench/drain.py writes its 20,000 queued claims with the gateway's own claim
construction, not through the API: when that code changes, the benchmark must follow
(a new argument of `_new_claim` once broke it without any test noticing)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, func, select

from gateway.claims.payload import payload_context
from gateway.security.crypto import Cipher
from gateway.security.keyring import load_keyring
from gateway.settings import load_settings
from gateway.storage.migrate import upgrade
from gateway.storage.models import Claim, ClaimHistory, Event
from gateway.storage.unit import UnitOfWork

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_drain_benchmark_fills_a_queue_the_gateway_can_send(tmp_path: Path,
                                                                monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    import drain
    import harness

    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    config = harness.write_config(tmp_path, "fill", url, sim_port=1, port=2)
    upgrade(url)
    drain.fill_direct(config, 3, "t")

    cipher = Cipher(load_keyring(load_settings(config)))
    engine = create_engine(url)
    with UnitOfWork(engine) as session:
        claims = session.exec(select(Claim)).scalars().all()
        assert [c.status for c in claims] == ["queued"] * 3
        assert {c.operator for c in claims} == {"opera"}
        assert all(c.next_attempt_at is not None for c in claims)
        body = cipher.decrypt_json(claims[0].payload_enc, context=payload_context(claims[0].id))
        assert body["invoice_number"].startswith("Ft-")
        assert len({c.beneficiary_hash for c in claims}) == 1 and claims[0].beneficiary_hash
        history = session.execute(select(func.count()).select_from(ClaimHistory)).scalar_one()
        events = session.execute(select(Event.type)).scalars().all()
    engine.dispose()
    assert history == 3 and events == ["claim.queued"] * 3
