"""The PSC simulator speaks OIDC code flow with PKCE, and breaks ID tokens on demand."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.errors import BadSignatureError, ExpiredTokenError, InvalidClaimError, JoseError
from joserfc.jwk import KeySet

from gateway.domain.identifiers import rpps_luhn_ok
from gateway.identity.psc_simulator import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_PROFESSIONALS,
    Professional,
    create_psc_simulator,
)

pytestmark = pytest.mark.anyio

ISSUER = "http://psc.test"
CALLBACK = "http://gateway.test/console/psc/callback?from=login"
PHARMACIST = "10001234565"  # FINESS 330001231
OTHER = DEFAULT_PROFESSIONALS[1].rpps  # FINESS 690000880
BASIC = (DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)


@dataclass
class Clock:
    """A fake clock, so expiry is tested without waiting."""

    now: float = 1_764_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Login:
    """One authorization request's secrets, and the code it came back with."""

    verifier: str
    nonce: str
    state: str
    code: str = ""

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Forms(HTMLParser):
    """The login page's forms: button id -> (action, hidden fields, button text)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, tuple[str, dict[str, str], str]] = {}
        self._action, self._fields, self._button = "", {}, ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._action, self._fields = attr["action"], {}
        elif tag == "input" and attr.get("type") == "hidden":
            self._fields[attr["name"]] = attr["value"]
        elif tag == "button":
            self._button = attr["id"]
            self.forms[self._button] = (self._action, self._fields, "")

    def handle_data(self, data: str) -> None:
        if self._button:
            action, fields, text = self.forms[self._button]
            self.forms[self._button] = (action, fields, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "button":
            self._button = ""


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def psc(clock: Clock) -> FastAPI:
    return create_psc_simulator(ISSUER, clock=clock)


@pytest.fixture
async def http(psc: FastAPI, anyio_backend: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(psc), base_url=ISSUER) as client:
        yield client


def authorize_params(login: Login, **overrides: str) -> dict[str, str]:
    params = {"response_type": "code", "client_id": DEFAULT_CLIENT_ID, "redirect_uri": CALLBACK,
              "scope": "openid scope_all", "state": login.state, "nonce": login.nonce,
              "code_challenge": login.challenge, "code_challenge_method": "S256"}
    return params | overrides


async def log_in(http: httpx.AsyncClient, rpps: str = PHARMACIST) -> Login:
    """Authorize, pick `rpps` on the page, and follow the approval to the callback."""
    login = Login(secrets.token_urlsafe(48), secrets.token_urlsafe(16), secrets.token_urlsafe(16))
    page = await http.get("/auth", params=authorize_params(login))
    assert page.status_code == 200, page.text
    forms = Forms()
    forms.feed(page.text)
    action, fields, _ = forms.forms[f"psc-{rpps}"]
    approved = await http.post(action, data=fields)
    assert approved.status_code == 303
    location = urlsplit(approved.headers["location"])
    query = parse_qs(location.query)
    assert location._replace(query="").geturl() == CALLBACK.split("?")[0]
    assert query["from"] == ["login"] and query["state"] == [login.state]
    login.code = query["code"][0]
    return login


async def exchange(http: httpx.AsyncClient, login: Login, *, post_auth: bool = False,
                   **overrides: str) -> httpx.Response:
    form = {"grant_type": "authorization_code", "code": login.code, "redirect_uri": CALLBACK,
            "code_verifier": login.verifier}
    if post_auth:
        form |= {"client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET}
        return await http.post("/token", data=form | overrides)
    return await http.post("/token", data=form | overrides, auth=BASIC)


async def verified_claims(http: httpx.AsyncClient, id_token: str, nonce: str,
                          now: float) -> dict[str, Any]:
    """What a relying party checks: signature against /jwks, iss, aud, nonce, exp."""
    keys = KeySet.import_key_set((await http.get("/jwks")).json())
    token = jwt.decode(id_token, keys, algorithms=["RS256"])
    registry = jwt.JWTClaimsRegistry(
        now=int(now), iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": DEFAULT_CLIENT_ID},
        nonce={"essential": True, "value": nonce}, exp={"essential": True})
    registry.validate(token.claims)
    return token.claims


def test_default_professionals_are_valid_and_distinct() -> None:
    assert {p.finess for p in DEFAULT_PROFESSIONALS} >= {("330001231",), ("690000880",)}
    assert all(rpps_luhn_ok(p.rpps) for p in DEFAULT_PROFESSIONALS)
    with pytest.raises(ValueError, match="Luhn"):
        Professional("10001234566", "A", "B", ("330001231",))


async def test_discovery_points_at_the_issuer(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/.well-known/openid-configuration")).json()
    assert doc["issuer"] == ISSUER
    assert doc["authorization_endpoint"] == f"{ISSUER}/auth"
    assert doc["token_endpoint"] == f"{ISSUER}/token"
    assert doc["userinfo_endpoint"] == f"{ISSUER}/userinfo"
    assert doc["jwks_uri"] == f"{ISSUER}/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"client_secret_basic",
                                                                 "client_secret_post"}
    assert {"nonce", "SubjectRefPro", "otherIds"} <= set(doc["claims_supported"])
    key = (await http.get("/jwks")).json()["keys"][0]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256" and key["kid"]
    assert "d" not in key


async def test_login_page_lists_every_professional(http: httpx.AsyncClient) -> None:
    login = Login("v" * 43, "n", "s")
    page = await http.get("/auth", params=authorize_params(login, state='"><script>'))
    assert "Pro Santé Connect — simulateur (développement uniquement)" in page.text
    assert "<script>" not in page.text
    forms = Forms()
    forms.feed(page.text)
    for person in DEFAULT_PROFESSIONALS:
        action, fields, text = forms.forms[f"psc-{person.rpps}"]
        assert action == "/auth/approve" and fields["rpps"] == person.rpps
        assert fields["state"] == '"><script>' and fields["redirect_uri"] == CALLBACK
        assert text == (f"Se connecter : {person.given_name} {person.family_name}"
                        f" (RPPS {person.rpps})")


@pytest.mark.parametrize("overrides", [
    {"client_id": "stranger"}, {"response_type": "token"}, {"code_challenge": ""},
    {"code_challenge_method": "plain"}, {"redirect_uri": "javascript:alert(1)"},
    {"redirect_uri": "http://gateway.test/cb#frag"}, {"scope": "profile"},
])
async def test_bad_authorization_requests_are_refused(
    http: httpx.AsyncClient, overrides: dict[str, str],
) -> None:
    answer = await http.get("/auth", params=authorize_params(Login("v" * 43, "n", "s"),
                                                             **overrides))
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("post_auth", [False, True], ids=["basic", "post"])
async def test_full_code_flow(http: httpx.AsyncClient, clock: Clock, post_auth: bool) -> None:
    login = await log_in(http)
    answer = await exchange(http, login, post_auth=post_auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 120
    assert body["scope"] == "openid scope_all"
    claims = await verified_claims(http, body["id_token"], login.nonce, clock.now)
    assert claims["sub"] == f"f:sim:{PHARMACIST}" and claims["acr"] == "eidas1"
    assert claims["exp"] == claims["iat"] + 120 and claims["auth_time"] <= claims["iat"]
    info = await http.get("/userinfo", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.status_code == 200
    user = info.json()
    assert user["sub"] == claims["sub"] and user["SubjectNameID"] == f"8{PHARMACIST}"
    assert user["otherIds"] == [{"identifiant": PHARMACIST, "origine": "RPPS", "qualite": 1}]
    (exercice,) = user["SubjectRefPro"]["exercices"]
    assert exercice["codeProfession"] == "21"
    assert [a["numeroFinessSite"] for a in exercice["activities"]] == ["330001231"]


async def test_each_person_gets_their_own_activities(http: httpx.AsyncClient) -> None:
    access = (await exchange(http, await log_in(http, OTHER))).json()["access_token"]
    user = (await http.get("/userinfo", headers={"Authorization": f"Bearer {access}"})).json()
    activities = user["SubjectRefPro"]["exercices"][0]["activities"]
    assert [a["numeroFinessSite"] for a in activities] == ["690000880"]


async def test_pkce_mismatch_is_refused(http: httpx.AsyncClient) -> None:
    login = await log_in(http)
    answer = await exchange(http, login, code_verifier=secrets.token_urlsafe(48))
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


async def test_a_code_is_single_use(http: httpx.AsyncClient) -> None:
    login = await log_in(http)
    assert (await exchange(http, login)).status_code == 200
    again = await exchange(http, login)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_an_expired_code_is_refused(http: httpx.AsyncClient, clock: Clock) -> None:
    login = await log_in(http)
    clock.now += 61
    assert (await exchange(http, login)).json()["error"] == "invalid_grant"


async def test_wrong_client_secret_is_refused(http: httpx.AsyncClient) -> None:
    login = await log_in(http)
    basic = await http.post("/token", auth=(DEFAULT_CLIENT_ID, "guess"), data={
        "grant_type": "authorization_code", "code": login.code, "redirect_uri": CALLBACK,
        "code_verifier": login.verifier})
    assert basic.status_code == 401 and basic.json()["error"] == "invalid_client"
    post = await exchange(http, login, post_auth=True, client_secret="guess")
    assert post.status_code == 401 and post.json()["error"] == "invalid_client"
    assert (await exchange(http, login)).status_code == 200  # refusals did not burn the code


async def test_a_different_redirect_uri_at_token_is_refused(http: httpx.AsyncClient) -> None:
    login = await log_in(http)
    answer = await exchange(http, login, redirect_uri="http://gateway.test/console/psc/callback")
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


async def test_missing_parameters_are_invalid_requests(http: httpx.AsyncClient) -> None:
    answer = await http.post("/token", auth=BASIC, data={"grant_type": "authorization_code"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"


async def test_userinfo_needs_a_live_access_token(http: httpx.AsyncClient, clock: Clock) -> None:
    access = (await exchange(http, await log_in(http))).json()["access_token"]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {access}"}):
        refused = await http.get("/userinfo", headers=headers)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    clock.now += 121
    expired = await http.get("/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert expired.status_code == 401


@pytest.mark.parametrize(("mode", "error", "claim"), [
    ("tampered_id_token", BadSignatureError, None),
    ("wrong_audience", InvalidClaimError, "aud"),
    ("wrong_nonce", InvalidClaimError, "nonce"),
    ("expired_id_token", ExpiredTokenError, "exp"),
    ("wrong_issuer", InvalidClaimError, "iss"),
])
async def test_each_fault_breaks_the_matching_check(
    http: httpx.AsyncClient, clock: Clock, mode: str, error: type[JoseError], claim: str | None,
) -> None:
    assert (await http.post("/_faults", json={"mode": mode})).status_code == 200
    assert (await http.get("/_faults")).json() == {"mode": mode}
    login = await log_in(http)
    id_token = (await exchange(http, login)).json()["id_token"]
    with pytest.raises(error) as refused:
        await verified_claims(http, id_token, login.nonce, clock.now)
    assert getattr(refused.value, "claim", None) == claim
    await http.post("/_faults", json={"mode": "ok"})
    login = await log_in(http)
    id_token = (await exchange(http, login)).json()["id_token"]
    assert (await verified_claims(http, id_token, login.nonce, clock.now))["iss"] == ISSUER


async def test_unknown_fault_mode_is_unprocessable(http: httpx.AsyncClient) -> None:
    assert (await http.post("/_faults", json={"mode": "explode"})).status_code == 422
    assert (await http.get("/_faults")).json() == {"mode": "ok"}
