"""The dependency aliases every router uses: context, caller, role checks, rate limits."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.context import AppContext
from gateway.errors import Forbidden, RateLimited, Unauthorized
from gateway.metrics import RATE_LIMITED
from gateway.security.apikeys import Principal, Role, authenticate

bearer = HTTPBearer(auto_error=False, description="An API key from `gateway keys create`")


def get_context(request: Request) -> AppContext:
    return request.app.state.context  # type: ignore[no-any-return]


ContextDep = Annotated[AppContext, Depends(get_context)]


async def get_principal(
    ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send an API key as `Authorization: Bearer <key>`",
                           headers={"WWW-Authenticate": "Bearer"})
    secret = credentials.credentials
    principal = await ctx.db.read(lambda session: authenticate(session, secret))
    if principal is None:
        raise Unauthorized("unknown, revoked or expired API key",
                           headers={"WWW-Authenticate": "Bearer"})
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def require(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: PrincipalDep) -> Principal:
        if principal.role not in roles:
            raise Forbidden(f"this needs a key with role {' or '.join(roles)}")
        return principal

    return check


def rate_limited(endpoint_class: str) -> Callable[..., Awaitable[None]]:
    async def check(ctx: ContextDep, principal: PrincipalDep) -> None:
        wait = ctx.limiter.check(principal.key_id, endpoint_class)
        if wait is not None:
            RATE_LIMITED.labels(endpoint_class).inc()
            raise RateLimited(
                f"too many {endpoint_class} requests for this key; retry in {wait:g} s",
                headers={"Retry-After": str(int(wait))},
            )

    return check


PharmacyDep = Annotated[Principal, Depends(require("pharmacy"))]
