"""Who a Pro Santé Connect login lets in, and as whom.

First an account an admin linked to the RPPS (`gateway users create ... --rpps R`);
else a pharmacy this gateway serves that the person's activities name: the person
gets (or finds) an account of their own for it, re-checked against the activities at
every login, so a professional who left the pharmacy no longer enters it.
"""

from __future__ import annotations

from gateway.context import AppContext
from gateway.identity import repository, sessions, users
from gateway.identity.login import Refused, Started
from gateway.identity.psc import Professional
from gateway.observability.metrics import CONSOLE_LOGINS
from gateway.security.apikeys import Principal
from gateway.storage.models import User, utcnow
from gateway.storage.unit import UnitOfWork

PSC = Principal(key_id="psc", role="admin", finess=None, operators=None)


def provisioned_index(ctx: AppContext, rpps: str, finess: str) -> str:
    return ctx.cipher.index("user-psc", rpps, finess)


def _admitted(ctx: AppContext, session: UnitOfWork, who: Professional) -> User | None:
    linked = [u for u in repository.users_by_rpps(session, who.rpps)
              if u.disabled_at is None and users.genuine(u, ctx.credentials)]
    for user in linked:  # an admin's link first; a provisioned one only while still true
        is_own = user.email_index == provisioned_index(ctx, who.rpps, user.finess or "")
        if not is_own or user.finess in who.finess:
            return user
    served = repository.served_pharmacies(session)
    for finess in who.finess:
        if finess not in served:
            continue
        index = provisioned_index(ctx, who.rpps, finess)
        if repository.user_by_email_index(session, index) is not None:
            return None  # their account for this pharmacy exists and was disabled
        user = User(id=users.new_id(), role="pharmacist", finess=finess, rpps=who.rpps,
                    email_index=index, password_hash=None, password_one_time=False,
                    created_at=utcnow(), profile_enc=b"")
        user.profile_enc = ctx.cipher.encrypt_json({"name": who.name, "email": ""},
                                                   context=f"user:{user.id}")
        users.seal(user, ctx.credentials)
        session.add(user)
        session.flush()
        ctx.audit_log.append(session, PSC, "user.create", object_id=user.id,
                             role="pharmacist", finess=finess, method="psc")
        return user
    return None


async def with_psc(ctx: AppContext, who: Professional) -> Started | Refused:
    def admit(session: UnitOfWork) -> Started | Refused:
        user = _admitted(ctx, session, who)
        if user is None:
            ctx.audit_log.append(session, PSC, "console.login_psc", outcome="refused",
                                 activities=len(who.finess))
            return Refused("not_admitted")
        token, _ = sessions.open_session(session, user, stage=sessions.ACTIVE, method="psc",
                                         credentials=ctx.credentials)
        ctx.audit_log.append(session, users.principal_of(user), "console.login_psc",
                             object_id=user.id)
        return Started(token, sessions.ACTIVE)

    outcome = await ctx.db.write(admit)
    CONSOLE_LOGINS.labels("psc", "ok" if isinstance(outcome, Started) else "refused").inc()
    return outcome
