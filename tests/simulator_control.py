"""Drive an in-process simulator: inject faults, read its ledger."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI


async def set_fault(simulator: FastAPI, mode: str, **extra: Any) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(simulator),
                                 base_url="http://sim.test") as http:
        response = await http.post("/_faults", json={"mode": mode, **extra})
        response.raise_for_status()


async def ledger(simulator: FastAPI) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(simulator),
                                 base_url="http://sim.test") as http:
        return (await http.get("/_ledger")).json()  # type: ignore[no-any-return]
