"""A server's actions (``server event list``): who asked what, when, and how it ended.

The API starts an action in the transaction that accepts the request (so an action is
recorded exactly when its state change is); the compute worker that carries it out
finishes it, by the request id its context carries, when the server comes to rest.
What the API alone does (lock, unlock) starts finished. One place writes these rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import orm

from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import InstanceAction
from fabric.db.types import utcnow

SUCCESS, ERROR = "Success", "Error"

#: The action each compute RPC method finishes, as Nova names actions.
CREATE, DELETE = "create", "delete"


def _row(ctx: RequestContext, instance_id: str, action: str, finished: str | None) -> dict:
    now = utcnow()
    return {"instance_id": instance_id, "action": action, "request_id": ctx.request_id, "user_id": ctx.user_id,
            "project_id": ctx.project_id, "start_time": now, "finish_time": now if finished else None,
            "result": finished}


def start(session: orm.Session, ctx: RequestContext, instance_id: str, action: str,
          finished: str | None = None) -> None:
    """Record ``action`` on the instance for ``ctx``'s request, in the caller's transaction
    (``finished``: its result, for an action that ends here)."""
    session.add(InstanceAction(**_row(ctx, instance_id, action, finished)))


_INSERT = sa.insert(InstanceAction.__table__)


def start_all(conn: sa.Connection, ctx: RequestContext, instance_ids: list[str], action: str) -> None:
    """:func:`start` for each of ``instance_ids``, in one INSERT on the caller's connection
    (a create's servers: rows the session need not track)."""
    conn.execute(_INSERT, [_row(ctx, ident, action, None) for ident in instance_ids])


def finish(db: Database, ctx: RequestContext, instance_id: str, result: str, message: str | None = None) -> None:
    """Finish the instance's action of ``ctx``'s request, if it is still running (a
    redelivered message finds it finished and changes nothing)."""
    with db.single_statement() as connection:
        connection.execute(sa.update(InstanceAction).where(
            InstanceAction.instance_id == instance_id, InstanceAction.request_id == ctx.request_id,
            InstanceAction.finish_time.is_(None)).values(
                finish_time=utcnow(), result=result, message=None if message is None else message[:255]))
