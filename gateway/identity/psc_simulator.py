"""A local stand-in for Pro Santé Connect: OpenID Connect, authorization code with PKCE.

Why: there is no internet in the demo or the tests, and the gateway's PSC login must still be
exercised end to end, including its refusal of a bad ID token (`POST /_faults`).
Development only: anyone reaching `/auth` may log in as any of the synthetic professionals.
All state (codes, access tokens, faults) lives in the app instance, in memory, bounded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import unquote_plus, urlencode, urlsplit

import typer
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from joserfc import jwt
from joserfc.jwk import RSAKey
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import ImmutableMultiDict

from gateway.domain.identifiers import check_finess, check_rpps, rpps_luhn_ok

DEFAULT_CLIENT_ID = "gateway"
DEFAULT_CLIENT_SECRET = "psc-simulator-secret"  # noqa: S105 - a public secret of a dev simulator
CODE_TTL_S = 60
TOKEN_TTL_S = 120
MAX_ENTRIES = 1000  # codes, and access tokens: beyond this the oldest are dropped
WRONG_ISSUER = "https://wrong-issuer.invalid"
CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url(sha256) without padding
VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")  # RFC 7636 section 4.1
FaultMode = Literal["ok", "tampered_id_token", "wrong_audience", "wrong_nonce",
                    "expired_id_token", "wrong_issuer"]
CLAIMS = ["iss", "sub", "aud", "iat", "exp", "auth_time", "nonce", "acr", "amr",
          "SubjectNameID", "preferred_username", "given_name", "family_name", "otherIds",
          "SubjectRefPro"]


@dataclass(frozen=True)
class Professional:
    """A synthetic health professional; checked at construction so the demo never lies."""

    rpps: str
    given_name: str
    family_name: str
    finess: tuple[str, ...]
    profession: str = "21"  # code profession: 21 = pharmacien

    def __post_init__(self) -> None:
        if not rpps_luhn_ok(check_rpps(self.rpps)):
            raise ValueError("a synthetic RPPS number must carry a valid Luhn key")
        for finess in self.finess:
            check_finess(finess)

    @property
    def sub(self) -> str:
        return f"f:sim:{self.rpps}"


DEFAULT_PROFESSIONALS: tuple[Professional, ...] = (
    Professional("10001234565", "Camille", "Durand", ("330001231",)),
    Professional("10009876540", "Julien", "Martin", ("690000880",)),
)


class Faults(BaseModel):
    """How the ID tokens issued from now on are broken ("ok": they are not)."""

    model_config = ConfigDict(extra="forbid")

    mode: FaultMode


class _Refused(Exception):  # noqa: N818 - an OAuth error answer, rendered by the endpoint
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass
class _Grant:
    request: dict[str, str]  # the validated authorization request
    professional: Professional
    auth_time: int
    expires_at: float


@dataclass
class _Access:
    professional: Professional
    expires_at: float


E = TypeVar("E", bound=_Grant | _Access)


@dataclass
class _State:
    issuer: str
    client_id: str
    client_secret: str
    people: dict[str, Professional]
    clock: Callable[[], float]
    key: RSAKey
    faults: Faults = field(default_factory=lambda: Faults(mode="ok"))
    codes: dict[str, _Grant] = field(default_factory=dict)
    tokens: dict[str, _Access] = field(default_factory=dict)


def _store(entries: dict[str, E], value: E, now: float) -> str:
    """Keep `value` under a fresh random key, dropping the expired and then the oldest."""
    for expired in [k for k, entry in entries.items() if entry.expires_at <= now]:
        del entries[expired]
    while len(entries) >= MAX_ENTRIES:
        del entries[next(iter(entries))]
    key = secrets.token_urlsafe(32)
    entries[key] = value
    return key


def _one(params: ImmutableMultiDict[str, Any], name: str, *, required: bool = True) -> str:
    """One parameter at most once (RFC 6749 section 3.1); "" when absent and optional."""
    values = params.getlist(name)
    if len(values) > 1 or not all(isinstance(v, str) for v in values):
        raise _Refused(400, "invalid_request", f"{name} must be given once, as text")
    value: str = values[0] if values else ""
    if required and not value:
        raise _Refused(400, "invalid_request", f"{name} is missing")
    if len(value) > 2048:
        raise _Refused(400, "invalid_request", f"{name} is too long")
    return value


def _redirect_uri_ok(uri: str) -> bool:
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in uri):
        return False
    parts = urlsplit(uri)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment


def _authorization(state: _State, params: ImmutableMultiDict[str, Any]) -> dict[str, str]:
    """The authorization request, validated; `_Refused` names the first problem."""
    names = ("response_type", "client_id", "redirect_uri", "scope", "code_challenge",
             "code_challenge_method")
    given = {name: _one(params, name) for name in names}
    given |= {n: v for n in ("state", "nonce") if (v := _one(params, n, required=False))}
    if not hmac.compare_digest(given["client_id"].encode(), state.client_id.encode()):
        raise _Refused(400, "unauthorized_client", "unknown client_id")
    if not _redirect_uri_ok(given["redirect_uri"]):
        raise _Refused(400, "invalid_request", "redirect_uri must be an http(s) URL")
    if given["response_type"] != "code":
        raise _Refused(400, "unsupported_response_type", "response_type must be code")
    if "openid" not in given["scope"].split():
        raise _Refused(400, "invalid_scope", "scope must include openid")
    if given["code_challenge_method"] != "S256" or not CHALLENGE.fullmatch(
            given["code_challenge"]):
        raise _Refused(400, "invalid_request", "PKCE with S256 is required")
    return given


def _login_page(request: dict[str, str], people: list[Professional]) -> str:
    """One form per person; every value escaped, no script."""
    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                     for k, v in request.items())
    forms = "".join(
        f'<li><form method="post" action="/auth/approve">{hidden}'
        f'<input type="hidden" name="rpps" value="{escape(p.rpps)}">'
        f'<button type="submit" id="psc-{escape(p.rpps)}">Se connecter : {escape(p.given_name)}'
        f" {escape(p.family_name)} (RPPS {escape(p.rpps)})</button>"
        f" <small>FINESS {escape(', '.join(p.finess))}</small></form></li>"
        for p in people)
    title = "Pro Santé Connect — simulateur (développement uniquement)"
    return (f'<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>{title}</title>'
            f"</head><body><h1>{title}</h1><p>Choisissez le professionnel de santé fictif"
            f" à connecter.</p><ul>{forms}</ul></body></html>")


def _with_query(uri: str, extra: dict[str, str]) -> str:
    """`uri` with `extra` appended to its query, which is kept byte for byte."""
    parts = urlsplit(uri)
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return parts._replace(query=query).geturl()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _client(state: _State, request: Request, form: ImmutableMultiDict[str, Any]) -> str:
    """The authenticated client_id (client_secret_basic or client_secret_post)."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        if _one(form, "client_secret", required=False):
            raise _Refused(400, "invalid_request", "one client authentication method only")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except ValueError:
            raise _Refused(401, "invalid_client", "unreadable Basic credentials") from None
        client_id, _, secret = (unquote_plus(part) for part in decoded.partition(":"))
    else:
        client_id, secret = _one(form, "client_id"), _one(form, "client_secret")
    if not (hmac.compare_digest(client_id.encode(), state.client_id.encode())
            and hmac.compare_digest(secret.encode(), state.client_secret.encode())):
        raise _Refused(401, "invalid_client", "client authentication failed")
    return client_id


def _id_token(state: _State, grant: _Grant, now: int) -> str:
    """The signed ID token, broken as the current fault mode says."""
    mode = state.faults.mode
    iat = now - 3600 if mode == "expired_id_token" else now
    claims: dict[str, Any] = {
        "iss": WRONG_ISSUER if mode == "wrong_issuer" else state.issuer,
        "sub": grant.professional.sub,
        "aud": "someone-else" if mode == "wrong_audience" else state.client_id,
        "iat": iat, "exp": iat + TOKEN_TTL_S, "auth_time": min(grant.auth_time, iat),
        "acr": "eidas1", "amr": ["mfa"]}
    nonce = secrets.token_urlsafe(16) if mode == "wrong_nonce" else grant.request.get("nonce", "")
    if nonce:
        claims["nonce"] = nonce
    token = jwt.encode({"alg": "RS256", "kid": state.key.kid}, claims, state.key)
    if mode == "tampered_id_token":  # another person, under the original signature
        header, _, signature = token.split(".")
        forged = json.dumps(claims | {"sub": "f:sim:forged"}, separators=(",", ":"))
        token = f"{header}.{_b64(forged.encode())}.{signature}"
    return token


def _exchange(
    state: _State, request: Request, form: ImmutableMultiDict[str, Any],
) -> dict[str, Any]:
    """Check the client, the code, the redirect_uri and PKCE; then issue the tokens."""
    client_id = _client(state, request, form)
    if _one(form, "grant_type") != "authorization_code":
        raise _Refused(400, "unsupported_grant_type", "grant_type must be authorization_code")
    code, redirect_uri = _one(form, "code"), _one(form, "redirect_uri")
    verifier = _one(form, "code_verifier")
    if not VERIFIER.fullmatch(verifier):
        raise _Refused(400, "invalid_request", "code_verifier is malformed")
    now = state.clock()
    grant = state.codes.pop(code, None)  # single use, whatever follows
    if grant is None or grant.expires_at <= now:
        raise _Refused(400, "invalid_grant", "unknown, used or expired code")
    if grant.request["client_id"] != client_id:
        raise _Refused(400, "invalid_grant", "code issued to another client")
    if grant.request["redirect_uri"] != redirect_uri:
        raise _Refused(400, "invalid_grant", "redirect_uri differs from the authorization's")
    challenge = _b64(hashlib.sha256(verifier.encode("ascii")).digest())
    if not hmac.compare_digest(challenge, grant.request["code_challenge"]):
        raise _Refused(400, "invalid_grant", "PKCE verification failed")
    access = _store(state.tokens, _Access(grant.professional, now + TOKEN_TTL_S), now)
    return {"access_token": access, "token_type": "Bearer", "expires_in": TOKEN_TTL_S,
            "id_token": _id_token(state, grant, int(now)), "scope": grant.request["scope"]}


def _userinfo(person: Professional) -> dict[str, Any]:
    """PSC-shaped claims: the person, and the structures of their activities."""
    activities = [{"numeroFinessSite": f, "raisonSocialeSite": f"Pharmacie de test {f}",
                   "codeModeExercice": "L", "codeSecteurDactivite": "SA33"}
                  for f in person.finess]
    return {"sub": person.sub, "SubjectNameID": f"8{person.rpps}",
            "preferred_username": f"8{person.rpps}",
            "given_name": person.given_name, "family_name": person.family_name,
            "otherIds": [{"identifiant": person.rpps, "origine": "RPPS", "qualite": 1}],
            "SubjectRefPro": {"codeCivilite": "", "exercices": [
                {"codeProfession": person.profession, "codeCategorieProfessionnelle": "C",
                 "activities": activities}]}}


def _discovery(issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer, "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token", "userinfo_endpoint": f"{issuer}/userinfo",
        "jwks_uri": f"{issuer}/jwks", "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"], "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"], "scopes_supported": ["openid", "scope_all"],
        "acr_values_supported": ["eidas1"], "claims_supported": CLAIMS}


def _oauth_error(refused: _Refused) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if refused.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="psc-simulator"'
    return JSONResponse({"error": refused.error, "error_description": refused.description},
                        status_code=refused.status, headers=headers)


def create_psc_simulator(
    issuer: str, *, client_id: str = DEFAULT_CLIENT_ID,
    client_secret: str = DEFAULT_CLIENT_SECRET,
    professionals: tuple[Professional, ...] = DEFAULT_PROFESSIONALS,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """A fresh PSC stand-in at `issuer`, with its own RSA key, one client, and these people."""
    issuer = issuer.rstrip("/")
    key = RSAKey.generate_key(2048, parameters={"use": "sig", "alg": "RS256"}, auto_kid=True)
    state = _State(issuer, client_id, client_secret, {p.rpps: p for p in professionals},
                   clock, key)
    app = FastAPI(title="Pro Santé Connect simulator", openapi_url=None)
    app.state.psc = state

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return _discovery(state.issuer)

    @app.get("/jwks")
    async def jwks() -> dict[str, Any]:
        return {"keys": [state.key.as_dict(private=False)]}

    @app.get("/auth")
    async def authorize(request: Request) -> Response:
        try:
            auth = _authorization(state, request.query_params)
        except _Refused as refused:
            return PlainTextResponse(refused.description, status_code=400)
        return HTMLResponse(_login_page(auth, list(state.people.values())),
                            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    @app.post("/auth/approve")
    async def approve(request: Request) -> Response:
        form = await request.form()
        try:
            auth = _authorization(state, form)
            person = state.people.get(_one(form, "rpps"))
        except _Refused as refused:
            return PlainTextResponse(refused.description, status_code=400)
        if person is None:
            return PlainTextResponse("unknown professional", status_code=400)
        now = state.clock()
        code = _store(state.codes, _Grant(auth, person, int(now), now + CODE_TTL_S), now)
        answer = {"code": code} | ({"state": auth["state"]} if "state" in auth else {})
        return RedirectResponse(_with_query(auth["redirect_uri"], answer), status_code=303)

    @app.post("/token")
    async def token(request: Request) -> Response:
        try:
            body = _exchange(state, request, await request.form())
        except _Refused as refused:
            return _oauth_error(refused)
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @app.api_route("/userinfo", methods=["GET", "POST"])
    async def userinfo(request: Request) -> Response:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        access = state.tokens.get(presented) if scheme.lower() == "bearer" else None
        if access is None or access.expires_at <= state.clock():
            return JSONResponse({"error": "invalid_token"}, status_code=401,
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return JSONResponse(_userinfo(access.professional))

    @app.get("/_faults")
    async def get_faults() -> Faults:
        return state.faults

    @app.post("/_faults")
    async def set_faults(faults: Faults) -> Faults:
        state.faults = faults
        return faults

    return app


def psc_simulator_command(
    port: Annotated[int, typer.Option(help="port to listen on")],
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    client_id: Annotated[str, typer.Option(help="the one client allowed")] = DEFAULT_CLIENT_ID,
    client_secret: Annotated[str, typer.Option(
        envvar="PSC_SIMULATOR_CLIENT_SECRET", help="that client's secret")
    ] = DEFAULT_CLIENT_SECRET,
) -> None:
    """A local Pro Santé Connect stand-in (OIDC with PKCE), for development only."""
    import uvicorn

    app = create_psc_simulator(f"http://{host}:{port}", client_id=client_id,
                               client_secret=client_secret)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1)
