"""The deployment id: made with the database (migration 0012), read at start.

Instances sharing a database share it; nothing else does. It namespaces what they
share outside the database (Redis keys and channels: `redis_namespace`) and binds the
audit heads they sign and anchor (`gateway.audit.heads`).
"""

from __future__ import annotations

import secrets

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from gateway.storage.models import Deployment, table_of, utcnow
from gateway.storage.unit import UnitOfWork

_TABLE = table_of(Deployment)


def new_deployment_id() -> str:
    return f"dep_{secrets.token_hex(8)}"


def read_deployment_id(session: UnitOfWork) -> str | None:
    return session.execute(select(_TABLE.c.id).where(_TABLE.c.slot == 1)).scalar_one_or_none()


def ensure_deployment_id(session: UnitOfWork) -> str:
    """The id, or a new one when the row is gone (a table emptied by hand or by tests);
    concurrent instances agree on one: the row has a single slot."""
    if (found := read_deployment_id(session)) is not None:
        return found
    try:
        with session.begin_nested():
            session.execute(insert(_TABLE).values(slot=1, id=new_deployment_id(),
                                                  created_at=utcnow()))
    except IntegrityError:
        pass  # another instance made it first: read theirs
    made = read_deployment_id(session)
    if made is None:
        raise RuntimeError("the deployment row could not be made")
    return made


def redis_namespace(deployment_id: str) -> str:
    """The prefix of every Redis key and channel of this deployment."""
    return f"gateway:{deployment_id}"
