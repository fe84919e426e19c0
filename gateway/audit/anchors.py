"""Anchors: each signed audit head, exported outside the database as it is made.

One JSON object per head (deployment, head id, entry id and hash, instant, kid,
signature) goes to every configured sink:
- `[audit] anchor_file`: appended as one line (O_APPEND, then fsync) to a file the
  database's users cannot reach (another host's mount, a WORM volume, a shipped log);
- `[audit] anchor_url`: POSTed as JSON, retried on transport errors, 429 and 5xx
  (at most ATTEMPTS, with full jitter); only a URL from the configuration.
A head a sink could not take is kept (at most MAX_PENDING) and sent again with the
next one. `gateway audit verify --anchor FILE` reads the file back.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import structlog

from gateway.settings import Settings
from gateway.storage.models import AuditHead

log = structlog.get_logger(__name__)
ATTEMPTS = 3
BACKOFF_S = 0.5  # full jitter over 0.5, 1, 2 s...
MAX_PENDING = 1000
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FIELDS = ("deployment", "head_id", "entry_id", "entry_hash", "signed_at", "kid", "signature")


def anchor_record(head: AuditHead, deployment: str) -> dict[str, Any]:
    return {"deployment": deployment, "head_id": head.id, "entry_id": head.entry_id,
            "entry_hash": head.entry_hash,
            "signed_at": head.signed_at.isoformat(timespec="microseconds"),
            "kid": head.kid, "signature": head.signature}


def head_of(record: dict[str, Any]) -> tuple[AuditHead, str]:
    """The head an anchor line describes, and its deployment; ValueError if malformed."""
    if not isinstance(record, dict) or any(name not in record for name in FIELDS):
        raise ValueError("not an anchor record")
    try:
        head = AuditHead(id=int(record["head_id"]), entry_id=int(record["entry_id"]),
                         entry_hash=str(record["entry_hash"]), kid=str(record["kid"]),
                         signature=str(record["signature"]),
                         signed_at=datetime.fromisoformat(str(record["signed_at"])))
    except (TypeError, ValueError) as exc:
        raise ValueError("not an anchor record") from exc
    return head, str(record["deployment"])


def read_anchor_lines(path: Path) -> list[tuple[int, dict[str, Any] | None]]:
    """(line number, record or None when it is not JSON); blank lines skipped."""
    lines: list[tuple[int, dict[str, Any] | None]] = []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except ValueError:
                record = None
            lines.append((number, record if isinstance(record, dict) else None))
    return lines


class FileSink:
    """Appends one line per head: O_APPEND (never overwrites), fsync before returning."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode()
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)  # one write: concurrent instances never interleave a line
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new name must survive a crash too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    async def send(self, record: dict[str, Any]) -> None:
        await anyio.to_thread.run_sync(self.write, record)


class HttpSink:
    """POSTs each head as JSON; retries what may succeed later, a bounded number of times."""

    def __init__(self, url: str, *, timeout_s: float,
                 transport: httpx.AsyncBaseTransport | None = None,
                 backoff_s: float = BACKOFF_S) -> None:
        self.url = url
        self.backoff_s = backoff_s
        self.client = httpx.AsyncClient(timeout=timeout_s, transport=transport,
                                        follow_redirects=False)

    async def send(self, record: dict[str, Any]) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = await self.client.post(self.url, json=record)
            except httpx.TransportError:
                if attempt == ATTEMPTS:
                    raise
            else:
                if response.status_code < 300:
                    return
                if response.status_code not in RETRY_STATUSES or attempt == ATTEMPTS:
                    response.raise_for_status()
                    raise httpx.HTTPStatusError("unexpected answer", request=response.request,
                                                response=response)
            await asyncio.sleep(random.uniform(0, self.backoff_s * 2 ** (attempt - 1)))  # noqa: S311

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass(slots=True)
class Anchors:
    """Every configured sink; what one could not take waits for the next head."""

    sinks: list[FileSink | HttpSink]
    pending: dict[int, list[dict[str, Any]]]  # sink index -> records not yet taken

    @classmethod
    def from_settings(cls, settings: Settings, *,
                      transport: httpx.AsyncBaseTransport | None = None) -> Anchors:
        audit = settings.audit
        sinks: list[FileSink | HttpSink] = []
        if audit.anchor_file:
            sinks.append(FileSink(Path(audit.anchor_file)))
        if audit.anchor_url:
            sinks.append(HttpSink(audit.anchor_url, timeout_s=audit.anchor_timeout_s,
                                  transport=transport))
        if not sinks and not settings.is_development:
            log.warning("audit.anchor_unconfigured")  # heads stay in the database only
        return cls(sinks, {index: [] for index in range(len(sinks))})

    async def publish(self, head: AuditHead | None, deployment: str) -> None:
        """Send this head (if any) and whatever is pending, in order, to every sink."""
        for index, sink in enumerate(self.sinks):
            queue = self.pending[index]
            if head is not None:
                queue.append(anchor_record(head, deployment))
            while queue:
                try:
                    await sink.send(queue[0])
                except (OSError, httpx.HTTPError) as exc:
                    log.error("audit.anchor_failed", sink=type(sink).__name__,
                              head_id=queue[0]["head_id"], error=type(exc).__name__)
                    del queue[:-MAX_PENDING]
                    break
                queue.pop(0)

    async def aclose(self) -> None:
        for sink in self.sinks:
            if isinstance(sink, HttpSink):
                await sink.aclose()
