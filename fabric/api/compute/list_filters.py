"""Server listing filters beyond equality: ``changes-since`` (servers changed at or after a
time) and ``ip`` (a regular expression on the servers' fixed addresses), as Nova applies them."""

from __future__ import annotations

import re

import sqlalchemy as sa

from fabric import exception
from fabric.api.compute.usage import query_time
from fabric.db.models import AddressAllocation, Instance, Port


def changes_since(query: sa.Select, req) -> sa.Select:
    """``query`` (of instances) narrowed to those changed at or after ``changes-since`` (ISO 8601;
    a bad time is a 400 naming it)."""
    since = query_time(req, "changes-since", None)
    if since is None:
        return query
    return query.where(sa.func.coalesce(Instance.updated_at, Instance.created_at) >= since)


def by_address(session, rows: list, req) -> list:
    """``rows`` whose fixed addresses match the ``ip`` regular expression (all of them without one)."""
    pattern = req.get_param("ip")
    if not pattern or not rows:
        return rows
    try:
        wanted = re.compile(pattern)
    except re.error as err:
        raise exception.Invalid(reason=f"ip filter {pattern!r} is not a regex: {err}") from None
    ids = {r.id for r in rows}
    matching = {device for device, address in session.execute(
        sa.select(Port.device_id, AddressAllocation.address)
        .join(AddressAllocation, AddressAllocation.port_id == Port.id).where(Port.device_id.in_(ids)))
        if wanted.search(address.split("/")[0])}
    return [r for r in rows if r.id in matching]
