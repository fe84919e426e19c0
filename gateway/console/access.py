"""Who may open a printable receipt: the owning pharmacy, by its key or its console session."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from gateway.console.web import COOKIE
from gateway.errors import Forbidden, Unauthorized
from gateway.identity.sessions import resume
from gateway.security.apikeys import Principal
from gateway.web.deps import ContextDep, bearer, get_principal


async def key_or_session(
    request: Request, ctx: ContextDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """A Bearer key when one is sent (software), else the console cookie (a browser)."""
    if credentials is not None:
        principal = await get_principal(ctx, credentials)
    else:
        token = request.cookies.get(COOKIE)
        user = await ctx.db.write(lambda s: resume(
            s, token, credentials=ctx.credentials, limits=ctx.settings.console)
        ) if token else None
        if user is None:
            raise Unauthorized("log in to the console, or send the pharmacy's key",
                               headers={"WWW-Authenticate": "Bearer"})
        principal = user.principal
    if principal.role != "pharmacy":
        raise Forbidden("this needs a key with role pharmacy")
    return principal


ReceiptPrinterDep = Annotated[Principal, Depends(key_or_session)]
