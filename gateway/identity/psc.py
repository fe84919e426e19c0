"""Pro Santé Connect: the console login of health professionals (OpenID Connect, code
flow with PKCE, through authlib), and who it lets into which pharmacy.

The ID token is verified against the provider's published keys (signature, issuer,
audience, nonce, expiry) and the userinfo's `sub` must be the ID token's. The person
is their RPPS number; they enter a pharmacy only when their professional activities
name its FINESS, or when an admin has linked their RPPS to an account.
"""

from __future__ import annotations

import secrets
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    # authlib prefers the httpx2 fork and warns when it falls back to httpx, the
    # gateway's client: the fallback is the supported path for us.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.domain.identifiers import check_rpps
from gateway.settings import ProSanteConnectSettings

CALLBACK_PATH = "/console/psc/callback"
DISCOVERY_TTL_S = 3600
ALGORITHMS = ["RS256", "ES256", "PS256"]


class PscError(Exception):
    """The provider's answer cannot be trusted or used; the message says why (no token)."""


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """What the browser's state cookie keeps between the redirect and the callback."""

    state: str
    nonce: str
    code_verifier: str
    started_at: float


@dataclass(frozen=True, slots=True)
class Professional:
    rpps: str
    name: str
    finess: tuple[str, ...]  # the structures their activities name


def rpps_of(userinfo: Mapping[str, Any]) -> str:
    """The RPPS number: from `otherIds` (origin RPPS), else the national id `8` + RPPS."""
    for other in userinfo.get("otherIds") or []:
        if isinstance(other, dict) and other.get("origine") == "RPPS":
            return check_rpps(str(other.get("identifiant", "")))
    national = str(userinfo.get("SubjectNameID", ""))
    if len(national) == 12 and national.startswith("8"):
        return check_rpps(national[1:])
    raise PscError("the userinfo names no RPPS number")


def finess_of(userinfo: Mapping[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    pro = userinfo.get("SubjectRefPro") or {}
    for exercice in pro.get("exercices") or [] if isinstance(pro, dict) else []:
        for activity in exercice.get("activities") or [] if isinstance(exercice, dict) else []:
            if not isinstance(activity, dict):
                continue
            for name in ("numeroFinessSite", "numeroFinessetablissementJuridique"):
                value = str(activity.get(name) or "").strip()
                if value and value not in found:
                    found.append(value)
    return tuple(found)


class ProSanteConnect:
    """The client of one configured provider; discovery and keys cached for an hour."""

    def __init__(self, settings: ProSanteConnectSettings, public_url: str,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.redirect_uri = public_url.rstrip("/") + CALLBACK_PATH
        self._transport = transport
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._fetched_at = 0.0

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.settings.client_id,
            client_secret=self.settings.client_secret.get_secret_value(),
            scope=" ".join(self.settings.scopes), redirect_uri=self.redirect_uri,
            code_challenge_method="S256",
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 - a method name
            timeout=self.settings.timeout_s, transport=self._transport)

    async def _discover(self, client: AsyncOAuth2Client) -> dict[str, Any]:
        if self._metadata is None or time.monotonic() - self._fetched_at > DISCOVERY_TTL_S:
            url = self.settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
            answer = await client.request("GET", url, withhold_token=True)
            metadata = answer.raise_for_status().json()
            if metadata.get("issuer") != self.settings.issuer:
                raise PscError("the discovery document names another issuer")
            jwks = (await client.request("GET", metadata["jwks_uri"], withhold_token=True)
                    ).raise_for_status().json()
            self._metadata, self._keys = metadata, KeySet.import_key_set(jwks)
            self._fetched_at = time.monotonic()
        return self._metadata

    async def authorization_url(self) -> tuple[str, PendingAuthorization]:
        pending = PendingAuthorization(secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                                       secrets.token_urlsafe(48), time.time())
        async with self._client() as client:
            metadata = await self._discover(client)
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"], state=pending.state, nonce=pending.nonce,
                code_verifier=pending.code_verifier)
        return url, pending

    async def complete(self, *, code: str, pending: PendingAuthorization) -> Professional:
        """Exchange the code, verify the ID token, read the userinfo; raise PscError."""
        try:
            async with self._client() as client:
                metadata = await self._discover(client)
                token = await client.fetch_token(metadata["token_endpoint"], code=code,
                                                 code_verifier=pending.code_verifier,
                                                 grant_type="authorization_code")
                claims = self._verified_id_token(str(token.get("id_token", "")), pending)
                answer = await client.get(metadata["userinfo_endpoint"])
                answer.raise_for_status()
                userinfo = self._userinfo(answer)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise PscError(f"the provider's answer is unusable ({type(exc).__name__})") from exc
        except Exception as exc:  # authlib's OAuth errors have no common base with httpx's
            if isinstance(exc, PscError):
                raise
            raise PscError(f"the token exchange failed ({type(exc).__name__})") from exc
        if userinfo.get("sub") != claims.get("sub"):
            raise PscError("the userinfo is about someone else than the ID token")
        name = " ".join(str(userinfo.get(k, "")) for k in ("given_name", "family_name")).strip()
        return Professional(rpps=rpps_of(userinfo), name=name or "—",
                            finess=finess_of(userinfo))

    @property
    def _key_set(self) -> KeySet:
        if self._keys is None:
            raise PscError("the provider's keys were never fetched")
        return self._keys

    def _verified_id_token(self, id_token: str, pending: PendingAuthorization) -> dict[str, Any]:
        try:
            token = jwt.decode(id_token, self._key_set, algorithms=ALGORITHMS)
            jwt.JWTClaimsRegistry(
                leeway=30,
                iss={"essential": True, "value": self.settings.issuer},
                aud={"essential": True, "value": self.settings.client_id},
                nonce={"essential": True, "value": pending.nonce},
                sub={"essential": True}, exp={"essential": True},
            ).validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise PscError(f"the ID token is not valid ({type(exc).__name__})") from exc
        return dict(token.claims)

    def _userinfo(self, answer: httpx.Response) -> dict[str, Any]:
        if answer.headers.get("content-type", "").startswith("application/jwt"):
            try:
                return dict(jwt.decode(answer.text, self._key_set, algorithms=ALGORITHMS).claims)
            except (JoseError, ValueError) as exc:
                raise PscError("the signed userinfo does not verify") from exc
        data = answer.json()
        if not isinstance(data, dict):
            raise PscError("the userinfo is not an object")
        return data
