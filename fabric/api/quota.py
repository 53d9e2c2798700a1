"""Per-project quotas, enforced race-safely.

Usage lives in ``quota_usages`` and only ever changes through a guarded
UPDATE — ``in_use = in_use + n WHERE in_use + n <= limit`` — whose rows
(returned, or counted where the backend returns none) say whether the
reservation fit. Two concurrent requests therefore cannot both take the last
unit on any backend (the database re-checks the guard on the row it actually
changes), with no SELECT ... FOR UPDATE.

The API both reserves (on create) and releases (when a delete is accepted,
exactly once thanks to the instance row's own compare-and-swap).
"""

from __future__ import annotations

import functools
import weakref

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from fabric import exception
from fabric.db import Database
from fabric.db.models import Quota, QuotaUsage

#: Limits that apply where a project has no row of its own (-1: unlimited).
DEFAULT_LIMITS = {
    "instances": 10,
    "cores": 20,
    "ram": 51200,
    "key_pairs": 100,
}
#: Network v2.0's resources (Neutron's names and defaults), enforced by fabric.api.network_quotas.
NETWORK_DEFAULT_LIMITS = {
    "network": 100,
    "subnet": 100,
    "port": 500,
    "router": 10,
    "floatingip": 50,
}
#: Block Storage v3's resources (Cinder's names and defaults), enforced by fabric.volume.api.
VOLUME_DEFAULT_LIMITS = {
    "volumes": 10,
    "gigabytes": 1000,
    "snapshots": 10,
}
#: Every resource a project has a limit for.
ALL_DEFAULT_LIMITS = DEFAULT_LIMITS | NETWORK_DEFAULT_LIMITS | VOLUME_DEFAULT_LIMITS


def limits(session, project_id: str) -> dict[str, int]:
    """The project's limits: its own rows over the defaults."""
    result = dict(ALL_DEFAULT_LIMITS)
    for row in session.scalars(sa.select(Quota).where(Quota.project_id == project_id)):
        result[row.resource] = row.hard_limit
    return result


def usages(session, project_id: str) -> dict[str, int]:
    result = dict.fromkeys(ALL_DEFAULT_LIMITS, 0)
    for row in session.scalars(sa.select(QuotaUsage).where(QuotaUsage.project_id == project_id)):
        result[row.resource] = row.in_use
    return result


#: (database, project, resource) usage rows known to exist, so that
#: :func:`ensure_usage_rows` costs no query on a project's every later request. A row goes
#: only with its project (ON DELETE CASCADE); :func:`reserve` forgets a project whose row
#: it finds missing, so the next call creates it again.
_KNOWN_ROWS: weakref.WeakKeyDictionary[Database, set[tuple[str, str]]] = weakref.WeakKeyDictionary()


def ensure_usage_rows(db: Database, project_id: str, resources) -> None:
    """Create missing usage rows (each in its own transaction; a concurrent
    creator winning the unique constraint is fine)."""
    known = _KNOWN_ROWS.setdefault(db, set())
    wanted = {resource for resource in resources if (project_id, resource) not in known}
    if not wanted:
        return
    with db.begin() as session:
        have = set(session.scalars(sa.select(QuotaUsage.resource).where(
            QuotaUsage.project_id == project_id, QuotaUsage.resource.in_(list(wanted)))))
    for resource in wanted - have:
        try:
            with db.begin() as session:
                session.add(QuotaUsage(project_id=project_id, resource=resource, in_use=0))
        except sa_exc.IntegrityError:
            pass
    known.update((project_id, resource) for resource in wanted)


def _forget(project_id: str) -> None:
    for known in _KNOWN_ROWS.values():
        known.difference_update({entry for entry in known if entry[0] == project_id})


@functools.cache
def _reserve_statements(resources: tuple[str, ...]) -> tuple[sa.Select, sa.Update, sa.Update]:
    """The statements of :func:`reserve` for these resources (sorted), built once: the read of
    their usage and limits, and the guarded UPDATE taking ``delta_<i>`` of the i-th, plain and
    returning the resources it took. Core statements on the session's connection, built once,
    cost a fraction of building ORM ones each time (on the hot path of POST /servers they were
    a quarter of its CPU)."""
    usage, quotas = QuotaUsage.__table__, Quota.__table__
    own_limit = (sa.select(quotas.c.hard_limit).where(quotas.c.project_id == usage.c.project_id,
                                                      quotas.c.resource == usage.c.resource)
                 .scalar_subquery())
    limit = sa.func.coalesce(own_limit, sa.case(
        *((usage.c.resource == resource, ALL_DEFAULT_LIMITS.get(resource, -1)) for resource in resources),
        else_=-1))
    mine = sa.and_(usage.c.project_id == sa.bindparam("owner"), usage.c.resource.in_(resources))
    read = sa.select(usage.c.resource, usage.c.in_use, limit).where(mine)
    amount = sa.case(*((usage.c.resource == resource, sa.bindparam(f"delta_{index}", type_=sa.Integer))
                       for index, resource in enumerate(resources)), else_=0)
    take = (sa.update(usage).where(mine, sa.or_(limit < 0, usage.c.in_use + amount <= limit))
            .values(in_use=usage.c.in_use + amount))
    return read, take, take.returning(usage.c.resource)


def reserve(session, project_id: str, deltas: dict[str, int]) -> None:
    """Take ``deltas`` of the project's quota inside the caller's transaction.

    The usage rows must exist (:func:`ensure_usage_rows`). Raises
    QuotaExceeded naming the resource, request, usage and limit; the caller's
    transaction then rolls back whatever else was reserved.

    Where the database returns what an UPDATE changed (PostgreSQL, SQLite) a reservation
    that fits costs one statement whatever the number of resources (a POST /servers
    reserves three): the UPDATE taking them all, guarded per row as the module docstring
    says, returning the resources it took; only a refusal then reads the usage and limits,
    to name the first resource refused (its row is as the UPDATE found it). Elsewhere
    (MariaDB) the read comes first, then the UPDATE; a reservation that lost a race there
    (the guard refused a row the read said fits) raises for the resource with the least
    room left then.
    """
    wanted = {resource: delta for resource, delta in sorted(deltas.items()) if delta > 0}
    if not wanted:
        return
    read, take, take_returning = _reserve_statements(tuple(wanted))
    session.flush()  # what an ORM statement's autoflush did: the caller's pending rows go first
    conn = session.connection()
    params = {"owner": project_id} | {f"delta_{index}": delta for index, delta in enumerate(wanted.values())}
    if conn.dialect.update_returning:
        took = set(conn.execute(take_returning, params).scalars())
        if len(took) == len(wanted):
            return
        found = _usage_and_limits(conn, read, project_id)
        for resource, delta in wanted.items():
            if resource not in took:
                _refuse(project_id, resource, delta, found)
        raise AssertionError("unreachable: the UPDATE took fewer rows than it returned")
    found = _usage_and_limits(conn, read, project_id)
    for resource, delta in wanted.items():
        if resource not in found or 0 <= found[resource][1] < found[resource][0] + delta:
            _refuse(project_id, resource, delta, found)
    if conn.execute(take, params).rowcount != len(wanted):
        resource = min(wanted, key=lambda r: found[r][1] - found[r][0] - wanted[r] if found[r][1] >= 0 else 1 << 62)
        _refuse(project_id, resource, wanted[resource], found)


def _usage_and_limits(conn, read: sa.Select, project_id: str) -> dict[str, tuple[int, int]]:
    """resource -> (in use, limit) of the project's usage rows that ``read`` selects."""
    return {resource: (in_use, limit) for resource, in_use, limit in conn.execute(read, {"owner": project_id})}


def _refuse(project_id: str, resource: str, delta: int, found: dict[str, tuple[int, int]]) -> None:
    """Raise QuotaExceeded for ``delta`` of ``resource``, with its usage and limit as ``found``
    (a usage row missing: the project is forgotten, so its rows are made again next time)."""
    if resource not in found:
        _forget(project_id)
        raise exception.QuotaExceeded(resource=resource, project=project_id, requested=delta, in_use=0,
                                      limit=ALL_DEFAULT_LIMITS.get(resource, -1))
    in_use, resource_limit = found[resource]
    raise exception.QuotaExceeded(resource=resource, project=project_id, requested=delta,
                                  in_use=in_use, limit=resource_limit)


def release(session, project_id: str, deltas: dict[str, int]) -> None:
    """Give back ``deltas`` (never below zero) inside the caller's transaction."""
    for resource, delta in deltas.items():
        if delta <= 0:
            continue
        session.execute(sa.update(QuotaUsage).where(
            QuotaUsage.project_id == project_id, QuotaUsage.resource == resource)
            .values(in_use=sa.case((QuotaUsage.in_use >= delta, QuotaUsage.in_use - delta), else_=0)))


def set_limit(db: Database, project_id: str, resource: str, hard_limit: int) -> None:
    """Set one limit (update, else insert; a concurrent insert turns into an update)."""
    if resource not in ALL_DEFAULT_LIMITS:
        raise exception.Invalid(reason=f"quota resource {resource!r} is unknown; known: "
                                       f"{', '.join(sorted(ALL_DEFAULT_LIMITS))}")
    if hard_limit < -1:
        raise exception.Invalid(reason=f"quota {resource}={hard_limit} must be -1 (unlimited) or at least 0")
    for _ in range(3):
        with db.begin() as session:
            changed = session.execute(sa.update(Quota).where(
                Quota.project_id == project_id, Quota.resource == resource)
                .values(hard_limit=hard_limit)).rowcount
        if changed:
            return
        try:
            with db.begin() as session:
                session.add(Quota(project_id=project_id, resource=resource, hard_limit=hard_limit))
            return
        except sa_exc.IntegrityError:
            continue
    raise exception.Conflict(reason=f"quota {resource} of project {project_id} kept changing; try again")
