"""Object-level authorization of every route, generated from the app's route table (issue 6).

`ROUTES` says, for each (method, path) the app serves, how to exercise it with a real
object of pharmacy A (its claims, its provisional receipt, operator `opera`, its console
session) and what each of 12 callers gets: A's key or A's pharmacist's console session
(the owner), B's (404 for A's objects, never 403, never A's data), the wrong role (403),
no key or a bad key (401; the login page for the console), operations keys and accounts
scoped to another operator (403), or nothing to hide ("public": no personal data in the
answer). Console sessions are people's (password and TOTP code); an API key opens none.
A route missing from `ROUTES` (or from `SKIPPED`, with its reason) fails
`test_every_route_has_an_authorization_decision`: a new route forces a decision. Every
caller but the owners goes first; after each, a mutating route checks that A's object
(or the operator) is unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from console_people import LOGIN_TOKEN, Person, form_value, log_in, make_person
from fhir_samples import FHIR_JSON, fhir_claim, fhir_eligibility
from simulator_control import set_fault
from sqlmodel import select
from synthetic import OTHER_FINESS, PEOPLE, claim_body, rights_body

from gateway.claims.presenter import mask_nir
from gateway.identity.credentials import CredentialKeys
from gateway.keys import admin as keys_admin
from gateway.keys.admin import create_key
from gateway.security import apikeys
from gateway.security.keyring import load_credential_key
from gateway.storage.db import Database
from gateway.storage.models import ConsoleSession, User

pytestmark = pytest.mark.anyio

COOKIE = "gw_console"

# Mounted or framework routes with no object and no personal data behind them.
SKIPPED = {
    ("GET", "/openapi.json"): "the API description: public, static, no object",
    ("GET", "/docs"): "Swagger UI page: public, static, no object",
    ("GET", "/docs/assets/swagger-ui-bundle.js"): "Swagger UI's script: public, static",
    ("GET", "/docs/assets/swagger-ui.css"): "Swagger UI's style sheet: public, static",
    ("*", "/static"): "mounted static files (CSS): public, no object",
}

KEY_ACTORS = ("A", "B", "anonymous", "bad_key", "operations", "operations_elsewhere", "admin")
# a console session of the person standing for the actor named before "_session": A's and
# B's pharmacists, an operations account on every operator, one scoped to santex, an admin
PHARMACY_SESSIONS = ("A_session", "B_session")
STAFF_SESSIONS = ("operations_session", "operations_elsewhere_session", "admin_session")
CONSOLE_ACTORS = (*PHARMACY_SESSIONS, *STAFF_SESSIONS)
ACTORS = (*KEY_ACTORS, *CONSOLE_ACTORS)


# --------------------------------------------------------------------------- the world


@dataclass
class World:
    """Pharmacy A's objects, pharmacy B's own claim, and every caller's credentials."""

    http: httpx.AsyncClient
    settings: Any
    simulators: dict[str, Any]
    headers: dict[str, dict[str, str]]  # actor -> request headers (key or console cookie)
    secrets: dict[str, str]  # actor -> API key secret ("" for none)
    people: dict[str, Person]  # console actor -> the person behind its session
    csrf: dict[str, str]  # console actor -> its session's CSRF token
    session_hash: dict[str, str]  # console actor -> its session's token hash
    accepted: dict[str, Any]  # A's accepted claim
    queued: dict[str, Any]  # A's queued claim, with a provisional receipt
    b_claim: dict[str, Any]  # B's own accepted claim
    idempotency_key: str = "idem-A-1"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def receipt_id(self) -> str:
        return str(self.queued["coverage"]["receipt"]["id"])

    def a_data(self) -> list[str]:
        """What nobody but A may read: A's personal data, ids, invoice numbers, tokens."""
        person = PEOPLE[0]
        return [person["nir"], mask_nir(person["nir"]), person["last_name"],
                person["first_name"], person["birth_date"],
                self.accepted["id"], self.queued["id"], self.receipt_id,
                self.accepted["invoice_number"], self.queued["invoice_number"],
                self.queued["coverage"]["receipt"]["token"]]

    async def session_alive(self, actor: str) -> bool:
        database = Database(self.settings.database_url)
        try:
            row = database.read_now(
                lambda s: s.get(ConsoleSession, self.session_hash[actor]))
            return row is not None and row.ended_at is None
        finally:
            database.engine.dispose()

    async def a_claim_status(self, claim_id: str) -> str:
        answer = await self.http.get(f"/v1/claims/{claim_id}", headers=self.headers["A"])
        assert answer.status_code == 200, answer.text
        return str(answer.json()["status"])

    async def operator_paused(self, name: str) -> bool:
        board = await self.http.get("/v1/operators", headers=self.headers["operations"])
        return next(o["paused"] for o in board.json() if o["name"] == name)


def personal_data() -> list[str]:
    found = []
    for person in PEOPLE:
        found += [person["nir"], mask_nir(person["nir"]), person["last_name"],
                  person["first_name"], person["birth_date"]]
    return found


async def _console_login(http: httpx.AsyncClient, database: Database, credentials: Any,
                         person: Person) -> tuple[str, str, str]:
    """The person's whole login; returns the cookie's token, its stored hash, the CSRF token."""
    answer = await log_in(http, person)
    assert answer.headers["location"] == "/console/", answer.headers
    token = http.cookies[COOKIE]
    http.cookies.clear()  # each actor presents its own cookie explicitly
    hashed = credentials.digest(token)
    csrf = database.read_now(lambda s: s.get(ConsoleSession, hashed).csrf_token)
    return token, hashed, csrf


def console_people(settings: Any, database: Database) -> dict[str, Person]:
    return {
        "A_session": make_person(settings, "pharmacist", finess="330001231",
                                 database=database),
        "B_session": make_person(settings, "pharmacist", finess=OTHER_FINESS,
                                 database=database),
        "operations_session": make_person(settings, "operations", database=database),
        "operations_elsewhere_session": make_person(settings, "operations",
                                                    operators=["santex"], database=database),
        "admin_session": make_person(settings, "admin", database=database),
    }


@pytest.fixture
async def world(app, client, settings, simulators, pharmacy, other_pharmacy,
                operations, monkeypatch) -> World:
    database = app.state.context.db  # the world is built through the app's own engine
    with monkeypatch.context() as patch:  # keys as `gateway keys create` makes them
        patch.setattr(keys_admin, "_once", lambda _, work: database.write_now(work))
        _, elsewhere = create_key(settings, role="operations", operators=["santex"])
        _, admin = create_key(settings, role="admin")
    headers = {
        "A": pharmacy, "B": other_pharmacy, "anonymous": {},
        "bad_key": {"Authorization": "Bearer key_0000000000000000.not-a-key"},
        "operations": operations,
        "operations_elsewhere": {"Authorization": f"Bearer {elsewhere}"},
        "admin": {"Authorization": f"Bearer {admin}"},
    }
    secrets = {actor: h.get("Authorization", "").removeprefix("Bearer ")
               for actor, h in headers.items()}
    secrets["anonymous"] = ""

    accepted = await client.post("/v1/claims", json=claim_body("OA-ACC"),
                                 headers={**pharmacy, "Idempotency-Key": "idem-A-1"})
    assert accepted.status_code == 201, accepted.text
    b_claim = await client.post("/v1/claims", json=claim_body("OB-ACC", person=1,
                                                              finess=OTHER_FINESS),
                                headers=other_pharmacy)
    assert b_claim.status_code == 201, b_claim.text
    await set_fault(simulators["opera"], "down")
    queued = await client.post("/v1/claims", json=claim_body("OA-QUE"), headers=pharmacy)
    assert queued.status_code == 202, queued.text
    assert queued.json()["coverage"]["decision"] == "provisional", queued.text
    await set_fault(simulators["opera"], "ok")

    csrf, hashes, people = {}, {}, console_people(settings, database)
    for actor in CONSOLE_ACTORS:
        token, hashes[actor], csrf[actor] = await _console_login(
            client, database, app.state.context.credentials, people[actor])
        headers[actor] = {"Cookie": f"{COOKIE}={token}"}
        secrets[actor] = ""
    return World(http=client, settings=settings, simulators=simulators, headers=headers,
                 secrets=secrets, people=people, csrf=csrf, session_hash=hashes,
                 accepted=accepted.json(), queued=queued.json(), b_claim=b_claim.json(),
                 extra={"app": app})


# --------------------------------------------------------------------------- the table

Call = Callable[[World, str], Awaitable[httpx.Response]]
Check = Callable[[World, httpx.Response], Awaitable[None] | None]
OWNER = ("A", "A_session")


@dataclass(frozen=True)
class Expect:
    status: int
    check: Check | None = None


@dataclass(frozen=True)
class RouteSpec:
    """How to exercise a route on A's object, and what every caller must get."""

    kind: str
    call: Call
    expect: dict[str, Expect]
    owners: tuple[str, ...] = OWNER  # callers entitled to the object; they go last
    unchanged: Callable[[World], Awaitable[None]] | None = None  # after any other caller


def shows(ids: Callable[[World], str]) -> Check:
    def check(world: World, answer: httpx.Response) -> None:
        assert ids(world) in answer.text, "the owner's answer must show the object"
    return check


def denied(world: World, answer: httpx.Response) -> None:
    """Whatever a caller other than the owner got, none of A's data is in it."""
    for secret in world.a_data():
        assert secret not in answer.text, f"A's data {secret[:6]}... leaked"


def only_own(world: World, answer: httpx.Response) -> None:
    assert world.b_claim["id"] in answer.text, "B sees its own claim"
    denied(world, answer)


def no_personal_data(world: World, answer: httpx.Response) -> None:
    for secret in personal_data():
        assert secret not in answer.text, f"personal data {secret[:6]}... in the answer"


def a_exposure(world: World, answer: httpx.Response) -> None:
    assert answer.json() == {"outstanding_cents": 280, "by_operator": {"opera": 280}}


def b_exposure(world: World, answer: httpx.Response) -> None:
    assert answer.json()["outstanding_cents"] == 0, answer.text


def ops_queue(world: World, answer: httpx.Response) -> None:
    assert world.queued["id"] in answer.text  # ids and statuses only
    no_personal_data(world, answer)


def api(**expect: Expect) -> dict[str, Expect]:
    """An API route: no key, a bad key or only a console cookie is a 401."""
    return {**dict.fromkeys(("anonymous", "bad_key", *CONSOLE_ACTORS), Expect(401)), **expect}


def pharmacy_object(call: Call, *, owner: Expect, unchanged=None,
                    sessions: dict[str, Expect] | None = None) -> RouteSpec:
    """One of A's objects behind a pharmacy key: B gets 404, never 403."""
    return RouteSpec("pharmacy-object", call, {
        **api(A=owner, B=Expect(404), operations=Expect(403),
              operations_elsewhere=Expect(403), admin=Expect(403)),
        **(sessions or {}),
    }, unchanged=unchanged)


def pharmacy_own(call: Call, *, owner: Expect, other: Expect) -> RouteSpec:
    """A pharmacy's own collection: each pharmacy sees only its own objects."""
    return RouteSpec("pharmacy-own", call, api(
        A=owner, B=other, operations=Expect(403), operations_elsewhere=Expect(403),
        admin=Expect(403)))


def operations_only(call: Call, *, ok: Expect, unchanged=None) -> RouteSpec:
    """An operations verb on operator `opera`: pharmacies 403, a key scoped elsewhere 403."""
    return RouteSpec("operations", call, api(
        A=Expect(403), B=Expect(403), operations=ok, operations_elsewhere=Expect(403),
        admin=ok), owners=("operations", "admin"), unchanged=unchanged)


def any_role(call: Call) -> RouteSpec:
    ok = Expect(200, no_personal_data)
    return RouteSpec("any-role", call, api(**dict.fromkeys(
        ("A", "B", "operations", "operations_elsewhere", "admin"), ok)), owners=())


def public(call: Call) -> RouteSpec:
    return RouteSpec("public", call, dict.fromkeys(ACTORS, Expect(200, no_personal_data)),
                     owners=ACTORS)


def console(kind: str, call: Call, *, owners: tuple[str, ...] = PHARMACY_SESSIONS[:1],
            unchanged=None, **sessions: Expect) -> RouteSpec:
    """A console page or form: without a console session, the login page."""
    assert set(sessions) == set(CONSOLE_ACTORS)
    return RouteSpec(kind, call, {**dict.fromkeys(KEY_ACTORS, TO_LOGIN), **sessions},
                     owners=owners, unchanged=unchanged)


def staff_console(call: Call, ok: Expect, *, unchanged=None, admin_only: bool = False,
                  elsewhere: Expect = Expect(403)) -> RouteSpec:
    """An operations console page or form on operator `opera`."""
    denied_page = Expect(403, no_personal_data)
    return console(
        "console-staff", call, owners=("operations_session", "admin_session"),
        unchanged=unchanged, A_session=denied_page, B_session=denied_page,
        operations_session=denied_page if admin_only else ok,
        operations_elsewhere_session=denied_page if admin_only else elsewhere,
        admin_session=ok)


def get(path: Callable[[World], str]) -> Call:
    async def call(world: World, actor: str) -> httpx.Response:
        return await world.http.get(path(world), headers=world.headers[actor])
    return call


def post(path: Callable[[World], str], body: Callable[[World, str], Any] | None = None) -> Call:
    async def call(world: World, actor: str) -> httpx.Response:
        return await world.http.post(path(world), json=body(world, actor) if body else None,
                                     headers=world.headers[actor])
    return call


def console_post(path: Callable[[World], str], form: dict[str, str] | None = None) -> Call:
    """A console form with the actor's own CSRF token."""
    async def call(world: World, actor: str) -> httpx.Response:
        answer = await world.http.post(
            path(world), data={"csrf_token": world.csrf.get(actor, ""), **(form or {})},
            headers=world.headers[actor])
        world.http.cookies.clear()
        return answer
    return call


async def submit(world: World, actor: str) -> httpx.Response:
    """A resubmits its claim; B first sends A's very body (A's FINESS: 403), then its own
    claim under A's invoice number and A's Idempotency-Key: a new claim, never A's."""
    headers = {**world.headers[actor], "Idempotency-Key": world.idempotency_key}
    if actor == "B":
        as_a = await world.http.post("/v1/claims", json=claim_body("OA-ACC"), headers=headers)
        assert as_a.status_code == 403, as_a.text
        denied(world, as_a)
        body = claim_body("OA-ACC", person=1, finess=OTHER_FINESS)
    else:
        body = claim_body("OA-ACC")
    return await world.http.post("/v1/claims", json=body, headers=headers)


async def submit_fhir(world: World, actor: str) -> httpx.Response:
    """The same as `submit`, through the FHIR face: A's claim as a FHIR Claim with A's
    Idempotency-Key (A: a replay); B sends A's body (403), then its own (a new claim)."""
    headers = {**world.headers[actor], **FHIR_JSON, "Idempotency-Key": world.idempotency_key}
    if actor == "B":
        as_a = await world.http.post("/fhir/R4/Claim", json=fhir_claim(claim_body("OA-ACC")),
                                     headers=headers)
        assert as_a.status_code == 403, as_a.text
        denied(world, as_a)
        body = claim_body("OA-ACC", person=1, finess=OTHER_FINESS)
    else:
        body = claim_body("OA-ACC")
    return await world.http.post("/fhir/R4/Claim", json=fhir_claim(body), headers=headers)


def fhir_b_new_claim(world: World, answer: httpx.Response) -> None:
    """B's own claim through the FHIR face, nothing of A's."""
    assert answer.headers.get("Idempotent-Replayed") is None
    assert answer.json()["patient"]["display"] == mask_nir(PEOPLE[1]["nir"])
    for secret in world.a_data():
        assert secret == "OA-ACC" or secret not in answer.text, f"A's {secret[:6]}... leaked"


def fhir_a_replayed(world: World, answer: httpx.Response) -> None:
    assert answer.json()["identifier"][0]["value"] == world.accepted["id"]
    assert answer.headers.get("Idempotent-Replayed") == "true"


def b_new_claim(world: World, answer: httpx.Response) -> None:
    """B's own claim (it may reuse A's invoice number: unique per FINESS), nothing of A's."""
    assert answer.headers.get("Idempotent-Replayed") is None
    assert answer.json()["nir_masked"] == mask_nir(PEOPLE[1]["nir"])
    for secret in world.a_data():
        assert secret == "OA-ACC" or secret not in answer.text, f"A's {secret[:6]}... leaked"


def a_replayed(world: World, answer: httpx.Response) -> None:
    assert answer.json()["id"] == world.accepted["id"]
    assert answer.headers.get("Idempotent-Replayed") == "true"


async def queued_claim_untouched(world: World) -> None:
    assert await world.a_claim_status(world.queued["id"]) == "queued"


async def opera_not_paused(world: World) -> None:
    assert not await world.operator_paused("opera")


async def opera_still_paused(world: World) -> None:
    assert await world.operator_paused("opera")


async def pause_then_resume(world: World, actor: str) -> httpx.Response:
    paused = await world.http.post("/v1/operators/opera/pause", json={"reason": "test"},
                                   headers=world.headers["operations"])
    assert paused.status_code == 200, paused.text
    answer = await world.http.post("/v1/operators/opera/resume", headers=world.headers[actor])
    if answer.status_code == 200:
        assert not await world.operator_paused("opera")
    return answer


async def replay_progress(world: World, actor: str) -> httpx.Response:
    if "replay" not in world.extra:
        started = await world.http.post("/v1/operators/opera/replay",
                                        json={"status": "failed"},
                                        headers=world.headers["operations"])
        assert started.status_code == 200, started.text
        world.extra["replay"] = started.json()["replay_id"]
    return await world.http.get("/v1/operators/opera/replay", headers=world.headers[actor])


async def open_batch(world: World) -> str:
    """A batch holding A's queued claim, exported by operations (again, once released)."""
    if "batch" not in world.extra:
        answer = await world.http.post("/v1/operators/opera/exports",
                                       headers=world.headers["operations"])
        assert answer.status_code == 201, answer.text
        world.extra["batch"], world.extra["batch_file"] = answer.headers["batch-id"], answer.text
    return str(world.extra["batch"])


async def release_earlier_batch(world: World) -> None:
    """The previous owner's batch, if any: its claim back in the queue."""
    if "batch" in world.extra:
        released = await world.http.post(
            f"/v1/operators/opera/exports/{world.extra.pop('batch')}/release",
            headers=world.headers["operations"])
        assert released.status_code == 200, released.text


async def export_a_batch(world: World, actor: str) -> httpx.Response:
    await release_earlier_batch(world)
    answer = await world.http.post("/v1/operators/opera/exports", headers=world.headers[actor])
    if answer.status_code == 201:
        world.extra["batch"] = answer.headers["batch-id"]
    return answer


async def batch_file_again(world: World, actor: str) -> httpx.Response:
    batch = await open_batch(world)
    return await world.http.get(f"/v1/operators/opera/exports/{batch}",
                                headers=world.headers[actor])


async def release_a_batch(world: World, actor: str) -> httpx.Response:
    batch = await open_batch(world)
    answer = await world.http.post(f"/v1/operators/opera/exports/{batch}/release",
                                   headers=world.headers[actor])
    if answer.status_code == 200:
        del world.extra["batch"]  # the next owner exports another
    return answer


async def import_acks(world: World, actor: str) -> httpx.Response:
    from handover_support import acknowledge, give_keys

    await open_batch(world)
    if "acks" not in world.extra:
        give_keys(world.simulators["opera"], world.extra["app"])
        answer = await acknowledge(world.simulators["opera"], world.extra["batch_file"])
        assert answer.status_code == 200, answer.text
        world.extra["acks"] = answer.text
    return await world.http.post("/v1/operators/opera/acks", content=world.extra["acks"],
                                 headers=world.headers[actor])


async def export_a_batch_form(world: World, actor: str) -> httpx.Response:
    await release_earlier_batch(world)
    answer = await console_post(lambda w: "/console/operations/opera/exports")(world, actor)
    if answer.status_code == 200:
        world.extra["batch"] = answer.headers["content-disposition"].split('"')[1][:-4]
    return answer


async def batch_file_again_page(world: World, actor: str) -> httpx.Response:
    batch = await open_batch(world)
    return await get(lambda w: f"/console/operations/opera/exports/{batch}")(world, actor)


async def release_a_batch_form(world: World, actor: str) -> httpx.Response:
    batch = await open_batch(world)
    answer = await console_post(
        lambda w: f"/console/operations/opera/exports/{batch}/release")(world, actor)
    if answer.headers.get("location", "").startswith("/console/operations/opera/batches"):
        del world.extra["batch"]  # released (not a redirection to the login page)
    return answer


async def import_acks_form(world: World, actor: str) -> httpx.Response:
    await import_acks(world, "anonymous")  # the batch and its acknowledgement, once
    answer = await world.http.post(
        "/console/operations/opera/acks", data={"csrf_token": world.csrf.get(actor, "")},
        files={"acks": ("acks.jws", world.extra["acks"])}, headers=world.headers[actor])
    world.http.cookies.clear()
    return answer


async def queued_claim_exported(world: World) -> None:
    assert await world.a_claim_status(world.queued["id"]) == "exported"


async def receipt_status(world: World, actor: str) -> httpx.Response:
    """Console callers come as browsers (the patient's QR scan): the French page."""
    accept = "text/html" if actor in CONSOLE_ACTORS else "application/json"
    return await world.http.get(f"/v1/receipts/{world.receipt_id}",
                                headers={**world.headers[actor], "Accept": accept})


async def console_login(world: World, actor: str) -> httpx.Response:
    """The login form as the console's own page posts it (with its login token): a person
    brings their e-mail and password; any other caller its API key (or none), as the
    old key field and as a password: a key opens no session."""
    page = await world.http.get("/console/login")
    form = {"login_token": form_value(LOGIN_TOKEN, page.text)}
    if actor in world.people:
        person = world.people[actor]
        form |= {"email": person.email, "password": person.password}
    else:
        form |= {"key": world.secrets[actor], "email": "", "password": world.secrets[actor]}
    answer = await world.http.post("/console/login", data=form)
    world.extra["login_cookie"] = answer.cookies.get(COOKIE)
    world.http.cookies.clear()
    return answer


def no_session_opened(world: World, answer: httpx.Response) -> None:
    assert COOKIE not in answer.headers.get("set-cookie", ""), "a key opened a session"
    assert "Identifiant ou mot de passe incorrect." in answer.text
    html_page(world, answer)


async def second_factor_pending(world: World, answer: httpx.Response) -> None:
    """The password alone opens no page: the session waits for the second factor."""
    redirects_to("/console/login/code")(world, answer)
    token = world.extra.pop("login_cookie")
    assert token, "no session cookie after the password"
    home = await world.http.get("/console/", headers={"Cookie": f"{COOKIE}={token}"})
    assert home.status_code == 303 and home.headers["location"] == "/console/login"


async def console_logout(world: World, actor: str) -> httpx.Response:
    answer = await world.http.post("/console/logout",
                                   data={"csrf_token": world.csrf.get(actor, "")},
                                   headers=world.headers[actor])
    world.http.cookies.clear()
    return answer


def one_time_password_shown(world: World, answer: httpx.Response) -> None:
    assert 'id="one-time-password"' in answer.text, answer.text


async def no_new_account(world: World) -> None:
    database = Database(world.settings.database_url)
    try:
        count = database.read_now(lambda s: len(s.exec(select(User)).all()))
    finally:
        database.engine.dispose()
    assert count == len(CONSOLE_ACTORS), "an account was created by someone not allowed to"


async def a_session_alive(world: World) -> None:
    assert await world.session_alive("A_session"), "someone else ended A's console session"


async def a_session_ended(world: World, answer: httpx.Response) -> None:
    assert answer.headers["location"] == "/console/login"
    assert not await world.session_alive("A_session")


def redirects_to(location: str) -> Check:
    """A redirection to `location` (its query string aside)."""
    def check(world: World, answer: httpx.Response) -> None:
        assert answer.headers["location"].split("?")[0] == location, answer.headers["location"]
        no_personal_data(world, answer)
    return check


async def no_replay_of_opera(world: World) -> None:
    answer = await world.http.get("/v1/operators/opera/replay",
                                  headers=world.headers["operations"])
    assert answer.status_code == 404, answer.text


async def pause_then_resume_form(world: World, actor: str) -> httpx.Response:
    paused = await world.http.post("/v1/operators/opera/pause", json={"reason": "test"},
                                   headers=world.headers["operations"])
    assert paused.status_code == 200, paused.text
    return await console_post(lambda w: "/console/operations/opera/resume")(world, actor)


def a_key_id(world: World) -> str:
    return world.secrets["A"].split(".")[0]


def suspend_a_key(world: World) -> None:
    """A's key as a rights budget leaves it: suspended pending review."""
    credentials = CredentialKeys(load_credential_key(world.settings))
    database = Database(world.settings.database_url)
    try:
        database.write_now(lambda s: apikeys.suspend(s, a_key_id(world), "test", credentials))
    finally:
        database.engine.dispose()


async def lift_a_key(world: World, actor: str) -> httpx.Response:
    suspend_a_key(world)  # again, after an owner lifted it
    return await world.http.post(f"/v1/keys/{a_key_id(world)}/lift",
                                 headers=world.headers[actor])


async def lift_a_key_form(world: World, actor: str) -> httpx.Response:
    suspend_a_key(world)
    return await console_post(lambda w: f"/console/keys/{a_key_id(w)}/lift")(world, actor)


async def a_key_still_suspended(world: World) -> None:
    answer = await world.http.get("/v1/claims", headers=world.headers["A"])
    assert answer.status_code == 403 and answer.json()["type"] == "key-suspended", answer.text


def a_key_lifted(world: World, answer: httpx.Response) -> None:
    assert answer.json()["id"] == a_key_id(world) and answer.json()["suspended"] is False
    no_personal_data(world, answer)


def not_opera(world: World, answer: httpx.Response) -> None:
    """A key scoped to santex sees santex only."""
    assert "santex" in answer.text and "/operations/opera/" not in answer.text
    no_personal_data(world, answer)


def html_page(world: World, answer: httpx.Response) -> None:
    assert "text/html" in answer.headers["content-type"]
    no_personal_data(world, answer)


CLAIM = "/v1/claims/{claim_id}"
PRINT = "/console/receipts/{receipt_id}/print"
TO_LOGIN = Expect(303, redirects_to("/console/login"))
PAGE_403 = Expect(403, no_personal_data)
PAGE_404 = Expect(404, no_personal_data)
TO_BOARD = Expect(303, redirects_to("/console/operations"))
STAFF_PAGE = Expect(200, no_personal_data)

ROUTES: dict[tuple[str, str], RouteSpec] = {
    # ------------------------------------------------------------------ API, pharmacy
    ("POST", "/v1/claims"): RouteSpec("pharmacy-create", submit, api(
        A=Expect(201, a_replayed), B=Expect(201, b_new_claim), operations=Expect(403),
        operations_elsewhere=Expect(403), admin=Expect(403),
    ), owners=(*OWNER, "B")),  # B's answer is its own claim: b_new_claim checks it
    ("GET", "/v1/claims"): pharmacy_own(
        get(lambda w: "/v1/claims"),
        owner=Expect(200, shows(lambda w: w.queued["id"])), other=Expect(200, only_own)),
    ("GET", CLAIM): pharmacy_object(
        get(lambda w: f"/v1/claims/{w.accepted['id']}"),
        owner=Expect(200, shows(lambda w: w.accepted["id"]))),
    ("POST", CLAIM + "/cancel"): pharmacy_object(
        post(lambda w: f"/v1/claims/{w.queued['id']}/cancel"),
        owner=Expect(200, shows(lambda w: w.queued["id"])), unchanged=queued_claim_untouched),
    ("POST", "/fhir/R4/Claim"): RouteSpec("pharmacy-create", submit_fhir, api(
        A=Expect(201, fhir_a_replayed), B=Expect(201, fhir_b_new_claim),
        operations=Expect(403), operations_elsewhere=Expect(403), admin=Expect(403),
    ), owners=(*OWNER, "B")),
    ("GET", "/fhir/R4/ClaimResponse/{id}"): pharmacy_object(
        get(lambda w: f"/fhir/R4/ClaimResponse/{w.accepted['id'].replace('_', '-')}"),
        owner=Expect(200, shows(lambda w: w.accepted["id"]))),
    ("POST", "/fhir/R4/CoverageEligibilityRequest"): pharmacy_own(
        post(lambda w: "/fhir/R4/CoverageEligibilityRequest",
             lambda w, a: fhir_eligibility(rights_body(person=1 if a == "B" else 0))),
        owner=Expect(200), other=Expect(200)),
    ("GET", "/fhir/R4/metadata"): public(get(lambda w: "/fhir/R4/metadata")),
    ("POST", "/v1/rights"): pharmacy_own(
        post(lambda w: "/v1/rights", lambda w, a: rights_body(person=1 if a == "B" else 0)),
        owner=Expect(200), other=Expect(200)),
    ("GET", "/v1/events"): pharmacy_own(
        get(lambda w: "/v1/events"),
        owner=Expect(200, shows(lambda w: w.queued["id"])), other=Expect(200, only_own)),
    ("GET", "/v1/exposure"): pharmacy_own(
        get(lambda w: "/v1/exposure"), owner=Expect(200, a_exposure),
        other=Expect(200, b_exposure)),
    ("GET", PRINT): pharmacy_object(
        get(lambda w: f"/console/receipts/{w.receipt_id}/print"),
        owner=Expect(200, shows(lambda w: w.receipt_id)),
        # CONTRACT 3.5: the pharmacy's console session or its key as Bearer
        sessions={"A_session": Expect(200, shows(lambda w: w.receipt_id)),
                  "B_session": Expect(404),
                  **dict.fromkeys(STAFF_SESSIONS, Expect(403))}),
    # ------------------------------------------------------------------ API, operations
    ("GET", "/v1/operators"): any_role(get(lambda w: "/v1/operators")),
    ("POST", "/v1/operators/{name}/pause"): operations_only(
        post(lambda w: "/v1/operators/opera/pause", lambda w, a: {"reason": "maintenance"}),
        ok=Expect(200, no_personal_data), unchanged=opera_not_paused),
    ("POST", "/v1/operators/{name}/resume"): operations_only(
        pause_then_resume, ok=Expect(200, no_personal_data), unchanged=opera_still_paused),
    ("POST", "/v1/operators/{name}/replay"): operations_only(
        post(lambda w: "/v1/operators/opera/replay",
             lambda w, a: {"status": "queued", "dry_run": True}),
        ok=Expect(200, no_personal_data), unchanged=queued_claim_untouched),
    ("GET", "/v1/operators/{name}/replay"): operations_only(
        replay_progress, ok=Expect(200, no_personal_data)),
    ("GET", "/v1/operators/{name}/queue"): operations_only(
        get(lambda w: "/v1/operators/opera/queue"), ok=Expect(200, ops_queue)),
    # the batch hand-over of opera's queue (A's queued claim goes into the batch)
    ("POST", "/v1/operators/{name}/exports"): operations_only(
        export_a_batch, ok=Expect(201, no_personal_data), unchanged=queued_claim_untouched),
    ("GET", "/v1/operators/{name}/exports"): operations_only(
        get(lambda w: "/v1/operators/opera/exports"), ok=Expect(200, no_personal_data)),
    ("GET", "/v1/operators/{name}/exports/{batch_id}"): operations_only(
        batch_file_again, ok=Expect(200, no_personal_data)),
    ("POST", "/v1/operators/{name}/exports/{batch_id}/release"): operations_only(
        release_a_batch, ok=Expect(200, no_personal_data), unchanged=queued_claim_exported),
    # the first owner's acknowledgement settles the claim; the same file again is refused
    ("POST", "/v1/operators/{name}/acks"): RouteSpec("operations", import_acks, api(
        A=Expect(403), B=Expect(403), operations=Expect(200, no_personal_data),
        operations_elsewhere=Expect(403), admin=Expect(422)),
        owners=("operations", "admin"), unchanged=queued_claim_exported),
    # a pharmacy's key suspended over a rights budget: any operations key (keys are not an
    # operator's objects) or admin lifts it; pharmacies, even its own, may not
    ("POST", "/v1/keys/{key_id}/lift"): RouteSpec("operations", lift_a_key, api(
        A=Expect(403), B=Expect(403), **dict.fromkeys(
            ("operations", "operations_elsewhere", "admin"), Expect(200, a_key_lifted))),
        owners=("operations", "operations_elsewhere", "admin"),
        unchanged=a_key_still_suspended),
    # ------------------------------------------------------------------ public
    ("GET", "/v1/receipts/{receipt_id}"): public(receipt_status),
    ("GET", "/.well-known/jwks.json"): public(get(lambda w: "/.well-known/jwks.json")),
    ("GET", "/healthz"): public(get(lambda w: "/healthz")),
    ("GET", "/readyz"): public(get(lambda w: "/readyz")),
    ("GET", "/metrics"): public(get(lambda w: "/metrics")),
    # ------------------------------------------------------------------ console
    ("GET", "/console/login"): RouteSpec(
        "console-public", get(lambda w: "/console/login"),
        dict.fromkeys(ACTORS, Expect(200, html_page)), owners=ACTORS),
    ("POST", "/console/login"): RouteSpec("console-public", console_login, {
        # people log in; an API key (good, bad or none) is refused: the form again
        **dict.fromkeys(KEY_ACTORS, Expect(401, no_session_opened)),
        **dict.fromkeys(CONSOLE_ACTORS, Expect(303, second_factor_pending)),
    }, owners=ACTORS),
    # the login's later steps need a login in progress: none, or an open session, is sent
    # back to the login page (and the open session stays as it was)
    **{(method, f"/console/login/{step}"): console(
        "console-login-step",
        get(lambda w, step=step: f"/console/login/{step}") if method == "GET" else
        console_post(lambda w, step=step: f"/console/login/{step}", form),
        owners=(), unchanged=a_session_alive, **dict.fromkeys(CONSOLE_ACTORS, TO_LOGIN))
       for step, form in (("password", {"password": "x" * 16, "confirmation": "x" * 16}),
                          ("enrol", {"code": "000000"}), ("code", {"code": "000000"}))
       for method in ("GET", "POST")},
    ("POST", "/console/logout-everywhere"): console(
        # each person ends their own sessions only, never A's
        "console-session", console_post(lambda w: "/console/logout-everywhere"),
        unchanged=a_session_alive, A_session=Expect(303, a_session_ended),
        **dict.fromkeys(("B_session", *STAFF_SESSIONS), TO_LOGIN)),
    # Pro Santé Connect is not configured in these settings: no such page, for anyone
    ("GET", "/console/psc/start"): RouteSpec(
        "console-public", get(lambda w: "/console/psc/start"),
        dict.fromkeys(ACTORS, PAGE_404), owners=()),
    ("GET", "/console/psc/callback"): RouteSpec(
        "console-public", get(lambda w: "/console/psc/callback?code=x&state=y"),
        dict.fromkeys(ACTORS, PAGE_404), owners=()),
    ("POST", "/console/logout"): console(
        # each session ends itself only, never A's
        "console-session", console_logout, unchanged=a_session_alive,
        A_session=Expect(303, a_session_ended),
        **dict.fromkeys(("B_session", *STAFF_SESSIONS), TO_LOGIN)),
    ("GET", "/console/"): console(
        "console-pharmacy", get(lambda w: "/console/"),
        A_session=Expect(200, shows(lambda w: w.queued["id"])),
        B_session=Expect(200, only_own),
        **dict.fromkeys(STAFF_SESSIONS, TO_BOARD)),  # staff have their own home
    ("GET", "/console/fragments/dashboard"): console(
        "console-pharmacy", get(lambda w: "/console/fragments/dashboard"),
        A_session=Expect(200, shows(lambda w: w.queued["id"])),
        B_session=Expect(200, only_own), **dict.fromkeys(STAFF_SESSIONS, PAGE_403)),
    ("GET", "/console/claims/{claim_id}"): console(
        "console-pharmacy", get(lambda w: f"/console/claims/{w.accepted['id']}"),
        A_session=Expect(200, shows(lambda w: w.accepted["invoice_number"])),
        B_session=PAGE_404, **dict.fromkeys(STAFF_SESSIONS, PAGE_403)),
    ("GET", "/console/operations"): staff_console(
        get(lambda w: "/console/operations"), STAFF_PAGE, elsewhere=Expect(200, not_opera)),
    ("GET", "/console/operations/{name}/failed"): staff_console(
        get(lambda w: "/console/operations/opera/failed"), STAFF_PAGE),
    ("POST", "/console/operations/{name}/pause"): staff_console(
        console_post(lambda w: "/console/operations/opera/pause", {"reason": "maintenance"}),
        TO_BOARD, unchanged=opera_not_paused),
    ("POST", "/console/operations/{name}/resume"): staff_console(
        pause_then_resume_form, TO_BOARD, unchanged=opera_still_paused),
    ("POST", "/console/operations/{name}/replay/count"): staff_console(
        console_post(lambda w: "/console/operations/opera/replay/count",
                     {"status": "failed"}), STAFF_PAGE),
    ("POST", "/console/operations/{name}/replay"): staff_console(
        console_post(lambda w: "/console/operations/opera/replay", {"status": "failed"}),
        TO_BOARD, unchanged=no_replay_of_opera),
    ("GET", "/console/operations/{name}/batches"): staff_console(
        get(lambda w: "/console/operations/opera/batches"), STAFF_PAGE),
    ("POST", "/console/operations/{name}/exports"): staff_console(
        export_a_batch_form, Expect(200, no_personal_data), unchanged=queued_claim_untouched),
    ("GET", "/console/operations/{name}/exports/{batch_id}"): staff_console(
        batch_file_again_page, Expect(200, no_personal_data)),
    ("POST", "/console/operations/{name}/exports/{batch_id}/release"): staff_console(
        release_a_batch_form, Expect(303, redirects_to("/console/operations/opera/batches")),
        unchanged=queued_claim_exported),
    # as the API's: the first owner's upload settles the claim, the same file is refused
    ("POST", "/console/operations/{name}/acks"): console(
        "console-staff", import_acks_form, owners=("operations_session", "admin_session"),
        unchanged=queued_claim_exported, A_session=Expect(403), B_session=Expect(403),
        operations_session=Expect(303, redirects_to("/console/operations/opera/batches")),
        operations_elsewhere_session=Expect(403), admin_session=Expect(422, no_personal_data)),
    ("POST", "/console/keys/{key_id}/lift"): console(
        "console-staff", lift_a_key_form,
        owners=("operations_session", "operations_elsewhere_session", "admin_session"),
        unchanged=a_key_still_suspended, A_session=PAGE_403, B_session=PAGE_403,
        **dict.fromkeys(STAFF_SESSIONS, TO_BOARD)),
    ("GET", "/console/audit"): staff_console(
        get(lambda w: "/console/audit"), STAFF_PAGE, admin_only=True),
    # accounts: every staff member sees the list (to unlock); only an admin changes them
    ("GET", "/console/users"): staff_console(
        get(lambda w: "/console/users"), STAFF_PAGE, elsewhere=STAFF_PAGE),
    ("POST", "/console/users"): staff_console(
        console_post(lambda w: "/console/users", {
            "role": "operations", "name": "Nouvelle Personne",
            "email": "nouvelle@test.invalid"}),
        Expect(200, one_time_password_shown), admin_only=True, unchanged=no_new_account),
    ("POST", "/console/users/{user_id}/{action}"): staff_console(
        console_post(lambda w: f"/console/users/{w.people['A_session'].user_id}/disable"),
        Expect(303, redirects_to("/console/users")), admin_only=True,
        unchanged=a_session_alive),
    # the demo controls are not routes of the gateway: `gateway demo` mounts them on the
    # app it builds (tests/integration/test_console.py checks who may use them there)
}


# --------------------------------------------------------------------------- the tests


def app_routes(app: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers flattened."""
    try:
        from fastapi.routing import iter_route_contexts
        routes: Any = iter_route_contexts(app.routes)
    except ImportError:  # older FastAPI: included routes are already flat
        routes = app.routes
    for route in routes:
        methods = route.methods
        if methods is None:  # a mount
            yield "*", route.path
            continue
        for method in sorted(methods):
            if method != "HEAD" or "GET" not in methods:
                yield method, route.path


async def test_every_route_has_an_authorization_decision(app):
    served = set(app_routes(app))
    undecided = sorted(served - set(ROUTES) - set(SKIPPED))
    assert not undecided, (
        "routes without an object-level authorization entry in ROUTES (or a reason in "
        f"SKIPPED): {undecided}")
    stale = sorted((set(ROUTES) | set(SKIPPED)) - served)
    assert not stale, f"entries for routes the app no longer serves: {stale}"
    for key, spec in ROUTES.items():
        assert set(spec.expect) == set(ACTORS), f"{key}: an expectation for every caller"


async def _exercise(world: World, key: tuple[str, str], actor: str) -> None:
    spec = ROUTES[key]
    expect = spec.expect[actor]
    answer = await spec.call(world, actor)
    assert answer.status_code == expect.status, (
        f"{key[0]} {key[1]} as {actor}: expected {expect.status}, got {answer.status_code}: "
        f"{answer.text[:300]}")
    assert answer.status_code < 500
    if spec.kind in ("pharmacy-object", "console-pharmacy") and actor in ("B", "B_session"):
        assert answer.status_code != 403, "another pharmacy's object: 404, never 403"
    if expect.check is not None:
        result = expect.check(world, answer)
        if inspect.isawaitable(result):
            await result
    if actor not in spec.owners:
        denied(world, answer)
        if spec.unchanged is not None:
            await spec.unchanged(world)


@pytest.mark.parametrize("key", [pytest.param(key, id=f"{key[0]} {key[1]}") for key in ROUTES])
async def test_route_authorization(world, key):
    spec = ROUTES[key]
    # every other caller first, on the intact object; the owners last (they may consume it)
    for actor in sorted(spec.expect, key=lambda actor: actor in spec.owners):
        await _exercise(world, key, actor)
