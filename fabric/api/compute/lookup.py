"""Finding the server a request names: the one rule of which servers a caller may see.

Every compute resource that acts on one server (servers, actions, metadata, tags, events,
diagnostics, moves) looks it up here, so a server of another project is a 404 everywhere.
"""

from __future__ import annotations

import sqlalchemy as sa

from fabric import exception
from fabric.api import common
from fabric.db.models import Instance


def get_instance(session, context, server_id: str) -> Instance:
    """The live server ``server_id`` the caller may see; NotFound otherwise (also for
    another project's server, so its existence does not leak)."""
    instance = session.get(Instance, server_id)
    if instance is None or instance.deleted or not common.visible(context, instance.project_id):
        raise exception.NotFound(kind="Instance", ident=server_id)
    return instance


def get_instance_for_update(session, context, server_id: str) -> Instance:
    """:func:`get_instance`, its row locked until the transaction ends (so two changes of one
    server at once both land; SQLite's writers take turns anyway)."""
    get_instance(session, context, server_id)
    return session.scalars(sa.select(Instance).where(Instance.id == server_id).with_for_update()
                           .execution_options(populate_existing=True)).one()
