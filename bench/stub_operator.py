"""A fast stand-in operator for the benchmarks: the reference protocol on bare asyncio.

Why: `gateway simulator` is a FastAPI app and serves ~1,500 claims/s on these cores, so
a benchmark of the gateway's healthy path against it mostly measures the simulator.
This stub parses just enough HTTP/1.1 (keep-alive, Content-Length bodies) to answer
the reference protocol many times faster, so the gateway is what the figures show.

- `GET /health` 200 `{"status": "ok"}`; `POST /claims` accepts every claim (reference
  "stub-<n>", `amc_cents` = the sum of its lines), the same `Idempotency-Key` again gets
  the first answer again and counts as a duplicate; `GET /claims/{key}` the first answer
  or 404; `POST /claims/{key}/cancel` cancelled.
- `POST /_faults {"mode": "ok"|"down"}`: `down` answers 503 `Retry-After: 1` to every
  protocol request, recording nothing. `GET /_ledger` gives counts only
  (`received`, `distinct`, `duplicates`, `lookups`, `health`); `POST /_ledger/reset`.
It holds claim ids and counts, never a body. Listens on 127.0.0.1 only.
Run: python bench/stub_operator.py --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

JSON_HEADERS = b"Content-Type: application/json\r\n"


class Stub:
    def __init__(self) -> None:
        self.answers: dict[str, bytes] = {}
        self.mode = "ok"
        self.received = self.duplicates = self.lookups = self.health = self.accepted = 0

    def ledger(self) -> dict[str, Any]:
        return {"received": self.received, "distinct": len(self.answers),
                "duplicates": self.duplicates, "lookups": self.lookups, "health": self.health,
                "mode": self.mode}

    def handle(self, method: str, path: str, headers: dict[str, str],
               body: bytes) -> tuple[int, bytes, bytes]:
        """(status, extra header lines, JSON body) for one request."""
        if path.startswith("/_"):
            return self._control(method, path, body)
        if path == "/health":
            self.health += 1
        if self.mode == "down":
            return 503, b"Retry-After: 1\r\n", b'{"title":"down"}'
        if path == "/health" and method == "GET":
            return 200, b"", b'{"status":"ok"}'
        if path == "/claims" and method == "POST":
            return self._submit(headers.get("idempotency-key", ""), body)
        if path.startswith("/claims/"):
            key = path.split("/")[2]
            answer = self.answers.get(key)
            if answer is None:
                return 404, b"", b'{"title":"never received"}'
            if method == "POST" and path.endswith("/cancel"):
                return 200, b"", b'{"status":"cancelled"}'
            self.lookups += 1
            return 200, b"", answer
        return 404, b"", b'{"title":"not found"}'

    def _submit(self, key: str, body: bytes) -> tuple[int, bytes, bytes]:
        if not key:
            return 400, b"", b'{"title":"missing Idempotency-Key"}'
        self.received += 1
        if (answer := self.answers.get(key)) is not None:
            self.duplicates += 1
            return 200, b"", answer
        try:
            total = sum(int(line["amc_cents"]) for line in json.loads(body)["lines"])
        except (ValueError, KeyError, TypeError):
            return 422, b"", b'{"title":"unreadable claim"}'
        self.accepted += 1
        answer = json.dumps({"status": "accepted", "reference": f"stub-{self.accepted:08d}",
                             "amc_cents": total}).encode()
        self.answers[key] = answer
        return 200, b"", answer

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, bytes, bytes]:
        if path == "/_faults" and method == "POST":
            self.mode = "down" if json.loads(body).get("mode") == "down" else "ok"
        elif path == "/_ledger/reset" and method == "POST":
            self.answers.clear()
            self.received = self.duplicates = self.lookups = self.health = 0
        return 200, b"", json.dumps(self.ledger()).encode()


REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 422: b"Unprocessable Content",
           503: b"Service Unavailable"}


class Connection(asyncio.Protocol):
    def __init__(self, stub: Stub) -> None:
        self.stub = stub
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            method, path, _ = head[0].split(" ", 2)
            status, extra, payload = self.stub.handle(method, path, headers, body)
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 %d %s\r\n%s%sContent-Length: %d\r\n\r\n%s"
                % (status, REASONS.get(status, b"OK"), JSON_HEADERS, extra, len(payload),
                   payload))


async def serve(port: int) -> None:
    stub = Stub()
    server = await asyncio.get_running_loop().create_server(
        lambda: Connection(stub), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
