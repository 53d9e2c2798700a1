"""Writes every service shares about security groups: a project's ``default``
group (made on first use) and the groups a new port starts in.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from fabric import exception
from fabric.db import Database
from fabric.db.models import PortSecurityGroup, SecurityGroup, SecurityGroupRule

DEFAULT_NAME = "default"
DEFAULT_DESCRIPTION = "Default security group"


def _default_rules(group_id: str, project_id: str) -> list[SecurityGroupRule]:
    """Neutron's default group: ingress from members of the group itself, all egress."""
    return [SecurityGroupRule(security_group_id=group_id, project_id=project_id, direction=direction,
                              ethertype=ethertype, remote_group_id=group_id if direction == "ingress" else None,
                              description="")
            for direction in ("ingress", "egress") for ethertype in ("IPv4", "IPv6")]


def new_group_rules(group_id: str, project_id: str) -> list[SecurityGroupRule]:
    """The rules a newly created (non-default) group starts with: all egress, as in Neutron."""
    return [SecurityGroupRule(security_group_id=group_id, project_id=project_id, direction="egress",
                              ethertype=ethertype, description="") for ethertype in ("IPv4", "IPv6")]


_DEFAULT_GROUP_ID = sa.select(SecurityGroup.__table__.c.id).where(
    SecurityGroup.__table__.c.default_for == sa.bindparam("project_id"))


def _default_group_id(session, project_id: str) -> str | None:
    # Core on the session's connection: a read on every server create, without the ORM's cost.
    return session.connection().scalar(_DEFAULT_GROUP_ID, {"project_id": project_id})


def _add_default_group(session, project_id: str) -> str:
    """Add ``project_id``'s ``default`` group and its rules to the session; its id."""
    group = SecurityGroup(project_id=project_id, name=DEFAULT_NAME, description=DEFAULT_DESCRIPTION,
                          default_for=project_id)
    session.add(group)
    session.flush()
    session.add_all(_default_rules(group.id, project_id))
    return group.id


def ensure_default_group(db: Database, project_id: str) -> str:
    """The id of ``project_id``'s ``default`` group, created (with its rules) if missing.

    Safe under races: the unique ``default_for`` column lets one creator win; the
    others read its row.
    """
    with db.begin() as session:
        found = _default_group_id(session, project_id)
    if found is not None:
        return found
    try:
        with db.begin() as session:
            return _add_default_group(session, project_id)
    except sa_exc.IntegrityError:
        with db.begin() as session:
            return _default_group_id(session, project_id)


def default_group_in(session, project_id: str) -> str:
    """:func:`ensure_default_group` in the caller's transaction: one read when the group
    exists; else it is made under a savepoint (kept or rolled back with the caller's
    transaction) and a concurrent creator that won the unique ``default_for`` is read instead."""
    found = _default_group_id(session, project_id)
    if found is not None:
        return found
    try:
        with session.begin_nested():
            return _add_default_group(session, project_id)
    except sa_exc.IntegrityError:
        return _default_group_id(session, project_id)


def resolve_groups(session, project_id: str, refs: list[str], default_id: str | None = None) -> list[str]:
    """Ids of the project's groups named in ``refs`` (ids or names; an id is taken before a
    name); NotFound naming the first that is none of them, Conflict when a name is
    ambiguous. One statement per reference other than ``default`` with ``default_id``."""
    found = []
    for ref in refs:
        if ref == DEFAULT_NAME and default_id is not None:
            found.append(default_id)
            continue
        rows = session.execute(sa.select(SecurityGroup.id, SecurityGroup.name).where(
            SecurityGroup.project_id == project_id, sa.or_(SecurityGroup.id == ref, SecurityGroup.name == ref))).all()
        by_id = [row.id for row in rows if row.id == ref]
        named = by_id or [row.id for row in rows]
        if not named:
            raise exception.NotFound(kind="Security group", ident=ref)
        if len(named) > 1:
            raise exception.Conflict(reason=f"security group name {ref!r} is ambiguous ({len(named)} groups); "
                                            "use the id")
        found.append(named[0])
    return list(dict.fromkeys(found))


def bind_port_groups(db: Database, port_id: str, project_id: str, refs: list[str] | None) -> None:
    """A new port starts in the groups ``refs`` names (default: the project's ``default``
    group). Idempotent: a port already in some group is left as it is. One transaction (every
    build binds its new ports: the three it took showed at ~7% of a fake host's samples in
    tools/bench/storm.py)."""
    with db.begin() as session:
        bind_port_groups_in(session, port_id, project_id, refs)


def bind_port_groups_in(session: sa.orm.Session, port_id: str, project_id: str, refs: list[str] | None, *,
                        new_port: bool = False) -> None:
    """:func:`bind_port_groups` in the caller's transaction (the one that writes the port:
    two round trips fewer per build); ``new_port``: the port was inserted in that transaction,
    so it is in no group yet (no need to look)."""
    if not new_port and session.scalar(sa.select(PortSecurityGroup.port_id)
                                       .where(PortSecurityGroup.port_id == port_id).limit(1)) is not None:
        return
    default_id = default_group_in(session, project_id) if not refs or DEFAULT_NAME in refs else None
    ids = resolve_groups(session, project_id, refs or [DEFAULT_NAME], default_id)
    members = [PortSecurityGroup(port_id=port_id, security_group_id=g) for g in ids]
    if new_port:
        # Nobody else can bind a port this transaction is inserting (its row is not there for
        # them until the commit): no savepoint to fall back to (two round trips fewer).
        session.add_all(members)
        return
    try:
        with session.begin_nested():
            session.add_all(members)
    except sa_exc.IntegrityError:
        pass  # a redelivered build bound them first


def resolve_for_new_ports(session, project_id: str, refs: list[str]) -> list[str]:
    """Ids of the groups ``refs`` names for a server's new ports (none given: the
    project's ``default`` group), read in the caller's transaction; NotFound naming the
    first unknown one. The default group, when needed and missing, is made in that
    transaction too (:func:`default_group_in`): a create refused later leaves none behind."""
    refs = refs or [DEFAULT_NAME]
    default_id = default_group_in(session, project_id) if DEFAULT_NAME in refs else None
    return resolve_groups(session, project_id, refs, default_id)
