"""docs/integration.md, run: every HTTP example of the integrator's guide is sent to the real
app and its answer compared with the one the guide shows, so the guide cannot go stale.

The convention (the guide's last section says it to its readers too):
- `<!-- example: NAME -->` starts a runnable example; it ends at the next marker or heading.
  Examples run in the guide's order against one gateway, so a later one may use what an
  earlier one made. Some names have a setup here (`HOOKS`): the operator taken down, a
  drain run, a key spent over its rights budget... Others run as they are.
- a ```http block that starts with a method is a request: its `Authorization` header is
  replaced by the test's key (no header, no key), `Host` is dropped, the rest is sent as
  written. The next ```http block, starting `HTTP/1.1 <status>`, is its answer: the status,
  each header shown, and the JSON body are compared (no body shown: not compared).
- in an expected body, every key of an object must be there and no other, unless the
  object has `"…": "…"`; a list ending with `"…"` may have more items; `"<any>"` matches
  any value; a string ending with `…` matches a string starting with what precedes it; an
  instant (`2026-11-30T09:12:03…`) matches any instant.
- ids (`clm_…`, `rcp_…`, `evt_…`, `key_…`) and the values of `next`, `token`,
  `operator_reference`, `kid`, `x` and the `webhook-*` headers are bound: the first time
  the guide shows one, it stands for the value actually answered; afterwards the same
  text must be that same value, and is replaced by it in later requests. The guide's base
  URL stands for the test gateway's `public_url`.
- ```http webhook, ```toml and ```python blocks are checked by the example's hook (a
  delivery compared with a real one, the configuration loaded, the snippet executed).
A ```http block outside an example fails the test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import pkgutil
import re
import socket
import threading
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from operator_settings import operator_config
from simulator_control import set_fault
from sqlmodel import col, func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from synthetic import claim_body, nir_with_key, rights_body

import gateway
from gateway.errors import GatewayError
from gateway.keys.admin import create_key
from gateway.queue import repository as queue_repository
from gateway.queue.drain import DrainWorker
from gateway.settings import Settings, WebhookSettings
from gateway.storage.health import DatabaseUnavailable
from gateway.storage.models import Claim, WebhookCursor, utcnow
from gateway.webhooks.delivery import Backoff
from gateway.webhooks.repository import webhook_key
from gateway.webhooks.signing import decode_secret, signed_headers
from gateway.webhooks.worker import run_webhooks

pytestmark = pytest.mark.anyio
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "integration.md"
GUIDE_BASE_URL = "https://gateway.example.org"
ANY = "<any>"
MORE = "…"
MARKER = re.compile(r"^<!-- example: ([a-z0-9-]+) -->\s*$")
HEADING = re.compile(r"^#{1,6} ")
INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
BOUND_ID = re.compile(r"^(clm|rcp|evt|key)_[0-9A-Za-z_-]+$")
BOUND_NAMES = frozenset({"next", "token", "operator_reference", "kid", "x", "webhook-id",
                         "webhook-timestamp", "webhook-signature"})
DROPPED_REQUEST_HEADERS = frozenset({"host", "authorization"})


# --- the guide, parsed ---------------------------------------------------------------------


@dataclass
class Block:
    info: str  # what follows the opening fence: "http", "http webhook", "python", ...
    text: str
    line: int  # of the opening fence, 1-based

    @property
    def kind(self) -> str:
        if self.info == "http":
            return "response" if self.text.startswith("HTTP/") else "request"
        return self.info


@dataclass
class Example:
    name: str
    line: int
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Guide:
    examples: list[Example]
    stray: list[Block]  # ```http blocks outside any example
    text: str


def parse_guide(text: str) -> Guide:
    examples: list[Example] = []
    stray: list[Block] = []
    current: Example | None = None
    fence: Block | None = None
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is not None:
            if line.strip() == "```":
                fence.text = "\n".join(body).strip("\n")
                (current.blocks if current else stray if fence.info.startswith("http")
                 else []).append(fence)
                fence, body = None, []
            else:
                body.append(line)
            continue
        if line.startswith("```"):
            fence = Block(info=line[3:].strip(), text="", line=number)
        elif match := MARKER.match(line):
            current = Example(match.group(1), number)
            examples.append(current)
        elif HEADING.match(line):
            current = None
    assert fence is None, f"docs/integration.md: the fence at line {fence.line} never closes"
    return Guide(examples, stray, text)


@dataclass
class Message:
    start: str  # "POST /v1/claims" or "HTTP/1.1 201 Created"
    headers: list[tuple[str, str]]
    body: str
    line: int

    @classmethod
    def parse(cls, block: Block) -> Message:
        head, _, body = block.text.partition("\n\n")
        start, *header_lines = head.splitlines()
        headers = []
        for header in header_lines:
            name, colon, value = header.partition(":")
            assert colon, f"line {block.line}: {header!r} is not a header"
            headers.append((name.strip(), value.strip()))
        return cls(start.strip(), headers, body.strip(), block.line)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise AssertionError(f"line {self.line}: the body is not JSON: {exc}") from None


# --- comparing what the guide shows with what the gateway answers -----------------------------


class Mismatch(AssertionError):
    pass


@dataclass
class Bindings:
    """The guide's ids, cursors and tokens, each standing for the value actually answered."""

    values: dict[str, str]

    def substitute(self, text: str) -> str:
        for shown in sorted(self.values, key=len, reverse=True):
            text = text.replace(shown, self.values[shown])
        return text

    def bind(self, shown: str, actual: Any, where: str) -> None:
        if not isinstance(actual, str) or not actual:
            raise Mismatch(f"{where}: expected a value for {shown!r}, got {actual!r}")
        prefix = BOUND_ID.match(shown)
        if prefix and not actual.startswith(prefix.group(1) + "_"):
            raise Mismatch(f"{where}: {actual!r} is not a {prefix.group(1)}_ id")
        if shown.endswith(MORE) and not actual.startswith(shown[:-1]):
            raise Mismatch(f"{where}: {actual!r} does not start with {shown[:-1]!r}")
        for other, value in self.values.items():
            if value == actual:
                raise Mismatch(f"{where}: the guide shows this value as {shown!r} here and as "
                               f"{other!r} earlier: use one text for one value")
        self.values[shown] = actual

    def compare(self, expected: Any, actual: Any, where: str, name: str | None = None) -> None:
        if expected == ANY:
            return
        if isinstance(expected, dict):
            self._compare_object(expected, actual, where)
        elif isinstance(expected, list):
            self._compare_list(expected, actual, where)
        elif isinstance(expected, str):
            self.compare_text(expected, actual, where, name)
        elif type(expected) is not type(actual) or expected != actual:
            raise Mismatch(f"{where}: the guide shows {expected!r}, the gateway answered "
                           f"{actual!r}")

    def _compare_object(self, expected: dict[str, Any], actual: Any, where: str) -> None:
        if not isinstance(actual, dict):
            raise Mismatch(f"{where}: the guide shows an object, the gateway answered {actual!r}")
        shown = [key for key in expected if key != MORE]
        missing = [key for key in shown if key not in actual]
        extra = [] if MORE in expected else [key for key in actual if key not in expected]
        if missing or extra:
            raise Mismatch(f"{where}: keys the gateway did not answer: {missing}; keys the "
                           f"guide does not show: {extra}")
        for key in shown:
            self.compare(expected[key], actual[key], f"{where}.{key}", key)

    def _compare_list(self, expected: list[Any], actual: Any, where: str) -> None:
        if not isinstance(actual, list):
            raise Mismatch(f"{where}: the guide shows a list, the gateway answered {actual!r}")
        open_ended = bool(expected) and expected[-1] == MORE
        items = expected[:-1] if open_ended else expected
        if len(actual) < len(items) or (not open_ended and len(actual) != len(items)):
            raise Mismatch(f"{where}: the guide shows {len(items)} items"
                           f"{' or more' if open_ended else ''}, the gateway answered "
                           f"{len(actual)}: {actual!r}")
        for index, item in enumerate(items):
            self.compare(item, actual[index], f"{where}[{index}]")

    def compare_text(self, expected: str, actual: Any, where: str, name: str | None) -> None:
        if expected == ANY:
            return
        if expected in self.values:
            if actual != self.values[expected]:
                raise Mismatch(f"{where}: {expected!r} stands for {self.values[expected]!r} "
                               f"(bound earlier), the gateway answered {actual!r}")
            return
        if BOUND_ID.match(expected) or (name in BOUND_NAMES):
            self.bind(expected, actual, where)
            return
        expected = self.substitute(expected)
        if expected.endswith(MORE):
            matches = isinstance(actual, str) and actual.startswith(expected[:-1])
        elif INSTANT.match(expected):
            matches = isinstance(actual, str) and bool(INSTANT.match(actual))
        else:
            matches = actual == expected
        if not matches:
            raise Mismatch(f"{where}: the guide shows {expected!r}, the gateway answered "
                           f"{actual!r}")


# --- running the examples -------------------------------------------------------------------


@dataclass
class Run:
    """One pass over the guide against one gateway."""

    app: FastAPI
    client: httpx.AsyncClient
    settings: Settings
    simulators: dict[str, FastAPI]
    pharmacy: dict[str, str]
    bindings: Bindings
    auth: dict[str, str] = field(default_factory=dict)
    answers: dict[str, list[httpx.Response]] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def context(self) -> Any:
        return self.app.state.context

    def build(self, request: Message) -> httpx.Request:
        method, target, *_ = self.bindings.substitute(request.start).split()
        headers = {name: self.bindings.substitute(value) for name, value in request.headers
                   if name.lower() not in DROPPED_REQUEST_HEADERS}
        if any(name.lower() == "authorization" for name, _ in request.headers):
            headers.update(self.auth)
        content = self.bindings.substitute(request.body).encode() if request.body else None
        return self.client.build_request(method, target, headers=headers, content=content)

    async def send(self, request: Message) -> httpx.Response:
        return await self.client.send(self.build(request))

    def check(self, response: httpx.Response, expected: Message, where: str) -> None:
        status = int(expected.start.split()[1])
        if response.status_code != status:
            raise Mismatch(f"{where}: the guide shows {status}, the gateway answered "
                           f"{response.status_code}: {response.text}")
        for name, value in expected.headers:
            actual = response.headers.get(name)
            if actual is None:
                raise Mismatch(f"{where}: no {name} header in the answer")
            self.bindings.compare_text(value, actual, f"{where} header {name}", name.lower())
        if expected.body:
            self.bindings.compare(expected.json(), response.json(), f"{where} body")


Step = Callable[[Run, Example], Awaitable[None]]
BlockCheck = Callable[[Run, Example, Block], Awaitable[None]]


@dataclass
class Hook:
    before: Step | None = None
    after: Step | None = None
    blocks: dict[str, BlockCheck] = field(default_factory=dict)  # kind -> check


async def run_example(run: Run, example: Example) -> None:
    hook = HOOKS.get(example.name, Hook())
    run.auth = dict(run.pharmacy)
    if hook.before:
        await hook.before(run, example)
    try:
        blocks = iter(example.blocks)
        for block in blocks:
            where = f"docs/integration.md line {block.line} (example {example.name})"
            if block.kind == "request":
                expected = next(blocks, None)
                assert expected is not None and expected.kind == "response", (
                    f"{where}: a request must be followed by its ```http answer")
                response = await run.send(Message.parse(block))
                run.answers.setdefault(example.name, []).append(response)
                run.check(response, Message.parse(expected), where)
            elif block.kind == "response":
                raise AssertionError(f"{where}: an answer without its request")
            elif block.kind in hook.blocks:
                await hook.blocks[block.kind](run, example, block)
            elif block.kind not in ("sh", "json", "text", ""):
                raise AssertionError(f"{where}: a ```{block.info} block that nothing checks: "
                                     "give the example a hook in this test")
    finally:
        if hook.after:
            await hook.after(run, example)


# --- hooks: the state each example needs -----------------------------------------------------


async def operator_down(run: Run, _: Example) -> None:
    await set_fault(run.simulators["opera"], "down")


async def operator_up(run: Run, _: Example) -> None:
    await set_fault(run.simulators["opera"], "ok")


async def unsettled(run: Run, operator: str) -> int:
    def count(session: Any) -> int:
        return int(session.exec(select(func.count()).select_from(Claim).where(
            col(Claim.operator) == operator,
            col(Claim.status).in_(["queued", "pending"]))).one())

    return await run.context.db.read(count)


async def recover_and_drain(run: Run, example: Example) -> None:
    """The operator is back: what the drain worker would do, run here until nothing of the
    operator is left queued (the app fixture runs no workers)."""
    await operator_up(run, example)
    operator = run.context.operators.get("opera")
    if not operator.breaker.is_closed:
        operator.breaker.reset()
    await run.context.db.write(lambda s: queue_repository.make_due(s, "opera", utcnow()))
    worker = DrainWorker(run.context, operator)
    try:
        for _ in range(400):
            if not await unsettled(run, "opera"):
                return
            await worker.step()
            await asyncio.sleep(0.02)
        raise AssertionError("the drain did not settle every queued claim within the wait")
    finally:
        await worker.stop()


async def end_of_feed(run: Run, example: Example) -> None:
    """Bind the long-poll's `after` to the feed's end (what a client kept from its last
    read), then have another till submit a claim while the long-poll waits."""
    request = Message.parse(next(b for b in example.blocks if b.kind == "request"))
    shown = re.search(r"after=([^&\s]+)", request.start)
    assert shown, f"line {request.line}: the long-poll example has no after="
    feed = (await run.client.get("/v1/events", params={"limit": 500},
                                 headers=run.pharmacy)).json()
    run.bindings.values[shown.group(1)] = feed["next"]

    async def another_till() -> None:
        await asyncio.sleep(0.3)
        response = await run.client.post("/v1/claims", json=claim_body("T2-000001"),
                                          headers=run.pharmacy)
        assert response.status_code == 201, response.text

    run.tasks["another-till"] = asyncio.create_task(another_till())


async def another_till_done(run: Run, _: Example) -> None:
    await run.tasks.pop("another-till")


async def first_request_in_flight(run: Run, example: Example) -> None:
    """The example's request is sent once in the background to an operator that holds its
    answer; the example's own request is the retry that arrives meanwhile."""
    await set_fault(run.simulators["opera"], "hold")
    request = Message.parse(next(b for b in example.blocks if b.kind == "request"))
    run.tasks["first"] = asyncio.create_task(run.send(request))
    invoice = json.loads(request.body)["invoice_number"]
    for _ in range(500):
        listed = await run.client.get("/v1/claims", params={"status": "pending"},
                                      headers=run.pharmacy)
        if any(c["invoice_number"] == invoice for c in listed.json()["claims"]):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the first request's claim never became pending")


async def first_request_answered(run: Run, _: Example) -> None:
    first = await run.tasks.pop("first")
    assert first.status_code == 202, first.text


async def spend_rights_budget(run: Run, _: Example) -> None:
    """A new key of the pharmacy that has looked up 100 different people this hour."""
    _, secret = create_key(run.settings, role="pharmacy", finess="330001231")
    run.auth = {"Authorization": f"Bearer {secret}"}
    for index in range(run.settings.limits.rights_people_per_key_per_hour):
        body = rights_body()
        body["beneficiary"]["nir"] = nir_with_key(f"185077511{index:04d}")
        response = await run.client.post("/v1/rights", json=body, headers=run.auth)
        assert response.status_code == 200, response.text


async def database_fails(run: Run, _: Example) -> None:
    """Writes fail as on a full disk: the same refusal `Database.write` raises then."""
    async def refused(*_: Any, **__: Any) -> Any:
        raise DatabaseUnavailable("sqlite_full")

    run.context.db.write = refused  # an attribute of this instance, over the method


async def database_back(run: Run, _: Example) -> None:
    del run.context.db.write


async def instance_stopping(run: Run, _: Example) -> None:
    run.app.state.stop_signal.set()


async def instance_running(run: Run, _: Example) -> None:
    run.app.state.stop_signal.since = None


# --- the receipt and webhook snippets --------------------------------------------------------


def snippet(block: Block) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "guide_snippet"}
    exec(compile(block.text, f"docs/integration.md:{block.line}", "exec"), namespace)  # noqa: S102 - the guide's own code
    return namespace


def tampered(text: str) -> str:
    """The same text with one character of its middle changed."""
    middle = len(text) // 2
    return text[:middle] + ("A" if text[middle] != "A" else "B") + text[middle + 1:]


async def verify_receipt_offline(run: Run, _: Example, block: Block) -> None:
    queued = run.answers["claim-queued"][0].json()
    receipt = queued["coverage"]["receipt"]
    jwks = run.answers["receipt-keys"][0].json()
    verify = snippet(block)["verify_receipt"]
    payload = verify(receipt["token"], jwks, run.settings.public_url)
    assert (payload["rid"], payload["claim_id"], payload["amc_cents"]) == (
        receipt["id"], queued["id"], receipt["amc_cents"])
    header, body, signature = receipt["token"].split(".")
    for forged in (f"{header}.{tampered(body)}.{signature}",
                   f"{header}.{body}.{tampered(signature)}"):
        with pytest.raises(ValueError):
            verify(forged, jwks, run.settings.public_url)
    with pytest.raises(ValueError):
        verify(receipt["token"], jwks, "https://somebody-else.example")
    expired = run.context.receipts.signer.sign({**payload, "exp": payload["iat"] - 1})
    with pytest.raises(ValueError):
        verify(expired, jwks, run.settings.public_url)


class Receiver:
    """The pharmacy's webhook endpoint: a real HTTP server on 127.0.0.1 that records."""

    def __init__(self, path: str) -> None:
        self.received: list[tuple[str, str, dict[str, str], bytes]] = []
        app = Starlette(routes=[Route("/{rest:path}", self.handle, methods=["POST"])])
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}{path}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run,
                                       kwargs={"sockets": [self.socket]}, daemon=True)

    async def handle(self, request: Request) -> Response:
        self.received.append((request.method, request.url.path, dict(request.headers),
                              await request.body()))
        return Response(status_code=204)

    async def start(self) -> None:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the webhook receiver did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


async def configure_webhook(run: Run, example: Example, block: Block) -> None:
    """The guide's [[webhooks]] entry, pointed at a local receiver, and its worker started."""
    entry = tomllib.loads(block.text)["webhooks"][0]
    path = httpx.URL(entry["url"]).path
    receiver = Receiver(path)
    await receiver.start()
    hook = WebhookSettings(**{**entry, "url": receiver.url, "allow_private": True})
    ctx = dataclasses.replace(run.context, settings=run.settings.model_copy(
        update={"webhooks": [hook]}))
    stopping = asyncio.Event()
    worker = asyncio.create_task(run_webhooks(ctx, stopping, backoff=Backoff(0.02, 0.1),
                                              poll_s=0.02))
    run.state.update(receiver=receiver, stopping=stopping, webhook_worker=worker,
                     webhook_secret=entry["secret"])
    key = webhook_key(hook.finess, hook.url)
    for _ in range(500):
        if await run.context.db.read(lambda s: s.get(WebhookCursor, key)) is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the webhook worker never started")


async def compare_delivery(run: Run, example: Example, block: Block) -> None:
    receiver: Receiver = run.state["receiver"]
    for _ in range(500):
        if receiver.received:
            break
        await asyncio.sleep(0.02)
    assert len(receiver.received) == 1, f"expected one delivery, got {receiver.received}"
    method, path, headers, body = receiver.received[0]
    shown = Message.parse(block)
    where = f"docs/integration.md line {block.line} (example {example.name})"
    shown_method, shown_path, *_ = shown.start.split()
    assert (method, path) == (shown_method, shown_path), f"{where}: {method} {path}"
    for name, value in shown.headers:
        if name.lower() == "host":
            continue
        assert name.lower() in headers, f"{where}: no {name} header in the delivery"
        run.bindings.compare_text(value, headers[name.lower()], f"{where} header {name}",
                                  name.lower())
    run.bindings.compare(shown.json(), json.loads(body), f"{where} body")


async def verify_webhook_snippet(run: Run, _: Example, block: Block) -> None:
    _, _, headers, body = run.state["receiver"].received[0]
    verify = snippet(block)["verify_webhook"]
    secret = run.state["webhook_secret"]
    assert verify(secret, headers, body) == json.loads(body)
    with pytest.raises(ValueError):
        verify(secret, headers, body.replace(b"claim.", b"claim!"))
    stale = signed_headers(decode_secret(secret), headers["webhook-id"],
                           int(headers["webhook-timestamp"]) - 3600, body)
    with pytest.raises(ValueError):
        verify(secret, {**headers, **stale}, body)  # well signed, an hour old: a replay


async def stop_webhooks(run: Run, _: Example | None = None) -> None:
    run.state.pop("stopping").set()
    await run.state.pop("webhook_worker")
    run.state.pop("receiver").stop()


HOOKS: dict[str, Hook] = {
    "claim-in-flight": Hook(before=first_request_in_flight),
    "claim-in-flight-answered": Hook(before=first_request_answered, after=operator_up),
    "claim-queued": Hook(before=operator_down),
    "receipt-offline": Hook(blocks={"python": verify_receipt_offline}),
    "claim-recovered": Hook(before=recover_and_drain),
    "events-long-poll": Hook(before=end_of_feed, after=another_till_done),
    "webhook": Hook(after=stop_webhooks, blocks={
        "toml": configure_webhook, "http webhook": compare_delivery,
        "python": verify_webhook_snippet}),
    "cancel-queued": Hook(before=operator_down, after=operator_up),
    "rights-cache": Hook(before=operator_down, after=operator_up),
    "rights-budget": Hook(before=spend_rights_budget),
    "database-unavailable": Hook(before=database_fails, after=database_back),
    "shutting-down": Hook(before=instance_stopping, after=instance_running),
}


# --- the tests ------------------------------------------------------------------------------


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """As tests/conftest.py, with an operator slow enough to answer for the in-flight
    example to catch its first request still waiting (2 s)."""
    return Settings(
        environment="development", database_url=database_url, data_dir=tmp_path / "data",
        operators=[operator_config("opera", ["80*", "123456789"], timeout_s=2.0,
                                   deadline_s=2.0),
                   operator_config("santex", ["90*"], provisional="cached_rights")],
    )


def read_guide() -> Guide:
    return parse_guide(GUIDE.read_text(encoding="utf-8"))


async def test_every_example_of_the_guide_answers_as_shown(app, client, settings, simulators,
                                                          pharmacy):
    guide = read_guide()
    assert not guide.stray, "```http blocks outside an example (give each a marker): " + \
        ", ".join(f"line {b.line}" for b in guide.stray)
    names = [example.name for example in guide.examples]
    assert len(names) == len(set(names)), f"example names are not unique: {names}"
    assert set(HOOKS) <= set(names), f"hooks of examples the guide lost: {set(HOOKS) - set(names)}"
    run = Run(app, client, settings, simulators, pharmacy,
              Bindings({GUIDE_BASE_URL: settings.public_url.rstrip("/")}))
    try:
        for example in guide.examples:
            await run_example(run, example)
    finally:
        for task in run.tasks.values():
            task.cancel()
        if "receiver" in run.state:
            await stop_webhooks(run)


# --- the error table ------------------------------------------------------------------------

# Answered by gateway/errors.py's handlers without a GatewayError class: type -> (status,
# or None for "as the framework says"; the text that makes them in gateway/errors.py).
FRAMEWORK_TYPES = {
    "method-not-allowed": (405, '405: "method-not-allowed"'),
    "http-error": (None, '"http-error"'),
}
TABLE_ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (\d{3}) \|")


def error_classes() -> Iterator[type[GatewayError]]:
    """Every GatewayError class the gateway defines, wherever it lives."""
    for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if ".migrations" not in module.name and not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    pending = [GatewayError]
    while pending:
        kind = pending.pop()
        yield kind
        pending.extend(kind.__subclasses__())


def guide_error_table() -> dict[str, set[int]]:
    section = read_guide().text.split("## Every error", 1)
    assert len(section) == 2, "the guide has no '## Every error …' section"
    table: dict[str, set[int]] = {}
    for line in section[1].split("\n## ", 1)[0].splitlines():
        if match := TABLE_ROW.match(line):
            table.setdefault(match.group(1), set()).add(int(match.group(2)))
    return table


def test_the_error_table_names_every_error_type_the_code_defines():
    errors_source = (Path(gateway.__file__).parent / "errors.py").read_text()
    for slug, (_, code) in FRAMEWORK_TYPES.items():
        assert code in errors_source, f"{slug}: gateway/errors.py changed; update this test"
    defined: set[tuple[str, int | None]] = {(kind.type, kind.status) for kind in error_classes()}
    defined |= {(slug, status) for slug, (status, _) in FRAMEWORK_TYPES.items()}
    table = guide_error_table()
    missing = sorted(slug for slug, _ in defined if slug not in table)
    assert not missing, f"error types missing from the guide's table: {missing}"
    wrong = sorted(f"{slug} is {status}, the table says {sorted(table[slug])}"
                   for slug, status in defined if status and status not in table[slug])
    assert not wrong, "; ".join(wrong)
    unknown = sorted(set(table) - {slug for slug, _ in defined})
    assert not unknown, f"the table names types the code does not define: {unknown}"
