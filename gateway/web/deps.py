"""The dependency aliases every router uses: context, caller, role checks, rate limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.context import AppContext
from gateway.errors import Forbidden, RateLimited, Unauthorized, invalid_key
from gateway.observability.metrics import RATE_LIMITED
from gateway.security.apikeys import Principal, Role, authenticate

bearer = HTTPBearer(auto_error=False, description="An API key from `gateway keys create`")


async def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context  # the lifespan's; State is untyped
    return context


ContextDep = Annotated[AppContext, Depends(get_context)]


CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _secret(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send an API key as `Authorization: Bearer <key>`",
                           headers={"WWW-Authenticate": "Bearer"})
    return credentials.credentials


async def get_principal(ctx: ContextDep, credentials: CredentialsDep) -> Principal:
    secret = _secret(credentials)
    principal = await ctx.db.read_connection(
        lambda connection: authenticate(connection, secret, ctx.credentials))
    if principal is None:
        raise invalid_key()
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"this needs a key with role {' or '.join(roles)}")
        return principal

    return check


async def check_rate(ctx: AppContext, principal: Principal, endpoint_class: str) -> None:
    """The key's limit for this class, counted with every instance's (see ratelimit)."""
    wait = await ctx.limiter.check(principal.key_id, endpoint_class)
    if wait is not None:
        RATE_LIMITED.labels(endpoint_class).inc()
        raise RateLimited(
            f"too many {endpoint_class} requests for this key; retry in {wait:g} s",
            headers={"Retry-After": str(int(wait))},
        )


def rate_limited(endpoint_class: str) -> Callable[..., Awaitable[None]]:
    async def check(ctx: ContextDep, principal: PrincipalDep) -> None:
        await check_rate(ctx, principal, endpoint_class)

    return check


async def submitter(ctx: ContextDep, credentials: CredentialsDep) -> Principal:
    """A pharmacy submitting a claim, within its rate limit, in one dependency.

    The key is read from a cache when seen before: claim submission confirms it again
    inside the transaction that stores the claim (`apikeys.is_live`), so a revoked or
    expired key still stores nothing from the moment it is revoked. This spares the
    hottest path a database read and a thread hop per request."""
    secret = _secret(credentials)
    principal = ctx.key_cache.get(secret)
    if principal is None:
        principal = await ctx.db.read_connection(lambda c: authenticate(c, secret, ctx.credentials))
        if principal is None:
            raise invalid_key()
        ctx.key_cache.put(secret, principal)
    if principal.role != "pharmacy":
        raise Forbidden("this needs a key with role pharmacy")
    await check_rate(ctx, principal, "claims")
    return principal


PharmacyDep = Annotated[Principal, Depends(require("pharmacy"))]
SubmitterDep = Annotated[Principal, Depends(submitter)]
