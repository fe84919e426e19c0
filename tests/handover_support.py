"""The hand-over in tests: an operator's key pairs, settings that configure their public
halves, and the simulator reading a batch and answering its acknowledgement.

A module of its own, as tests/operator_settings.py: test modules import this."""

from __future__ import annotations

from functools import cache
from typing import Any

import httpx
from fastapi import FastAPI
from joserfc.jwk import OKPKey


@cache
def operator_keys() -> tuple[dict[str, Any], dict[str, Any]]:
    """(encryption, signing) private JWKs of the simulated operator, made once per run."""
    return (OKPKey.generate_key("X25519").as_dict(private=True),
            OKPKey.generate_key("Ed25519").as_dict(private=True))


def public(jwk: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in jwk.items() if name != "d"}


def handover_config() -> dict[str, Any]:
    """The operator settings' hand-over keys (public halves)."""
    encryption, signing = operator_keys()
    return {"handover_encryption_key": public(encryption), "handover_ack_key": public(signing)}


def give_keys(simulator: FastAPI, gateway: FastAPI) -> None:
    """The simulator's private keys, and the gateway's JWKS as the operator fetched it."""
    from adapters.simulator_batches import BatchKeys

    encryption, signing = operator_keys()
    simulator.state.batch_keys = BatchKeys(
        encryption, signing, gateway.state.context.receipts.signer.jwks())


async def acknowledge(simulator: FastAPI, batch_file: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(simulator),
                                 base_url="http://sim.test") as http:
        return await http.post("/_batches", content=batch_file)
