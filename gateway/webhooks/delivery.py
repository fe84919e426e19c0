"""One delivery attempt of one event, and the retry schedule after a failure.

Failures are sorted by name: a non-2xx answer, a network error (httpx, DNS) or a
refused target; anything else is a bug and propagates. A redirect is a failure.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

import httpx
import structlog

from gateway.storage.models import Event
from gateway.webhooks.signing import signed_headers
from gateway.webhooks.targets import TargetRefused, resolve_target

log = structlog.get_logger(__name__)
USER_AGENT = "tiers-payant-gateway-webhooks/1"
_jitter = random.SystemRandom()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential with full jitter: attempt n waits up to min(cap, base * 2**(n-1))."""

    base_s: float = 1.0
    cap_s: float = 300.0

    def delay(self, attempts: int) -> float:
        ceiling = min(self.cap_s, self.base_s * 2 ** min(max(attempts - 1, 0), 32))
        return _jitter.uniform(0, ceiling)


@dataclass(frozen=True, slots=True)
class Hook:
    """A configured webhook with its decoded key; `key` identifies its cursor."""

    key: str
    finess: str
    url: str
    secret: bytes
    allow_private: bool


def payload(event: Event) -> bytes:
    """Ids only, never personal data; the receiver reads the rest through the API."""
    return json.dumps({
        "type": event.type,
        "timestamp": event.at.isoformat(),
        "data": {"id": event.event_id, "claim_id": event.claim_id},
    }, separators=(",", ":")).encode()


async def deliver(client: httpx.AsyncClient, hook: Hook, event: Event) -> str | None:
    """POST the signed event once; None when the receiver answered 2xx, else the error."""
    try:
        target = await resolve_target(hook.url, allow_private=hook.allow_private)
    except TargetRefused as exc:
        log.warning("webhook.refused", webhook=hook.key[:12], reason=str(exc))
        return f"refused: {exc}"
    except OSError as exc:
        return f"network: {type(exc).__name__}"
    body = payload(event)
    headers = signed_headers(hook.secret, event.event_id, int(time.time()), body)
    headers.update({"host": target.host_header, "content-type": "application/json",
                    "user-agent": USER_AGENT})
    request = client.build_request("POST", target.url, content=body, headers=headers,
                                   extensions=target.extensions)
    try:
        response = await client.send(request, stream=True, follow_redirects=False)
        await response.aclose()  # the body is not needed: never read what a receiver sends
    except httpx.HTTPError as exc:
        return f"network: {type(exc).__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"http {response.status_code}"
