"""Per-project quotas, enforced race-safely.

Usage lives in ``quota_usages`` and only ever changes through a guarded
UPDATE — ``in_use = in_use + n WHERE in_use + n <= limit`` — whose row count
says whether the reservation fit. Two concurrent requests therefore cannot
both take the last unit on any backend (the database re-checks the guard on
the row it actually changes), with no SELECT ... FOR UPDATE.

The API both reserves (on create) and releases (when a delete is accepted,
exactly once thanks to the instance row's own compare-and-swap).
"""

from __future__ import annotations

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


def limits(session, project_id: str) -> dict[str, int]:
    """The project's limits: its own rows over the defaults."""
    result = DEFAULT_LIMITS | NETWORK_DEFAULT_LIMITS
    for row in session.scalars(sa.select(Quota).where(Quota.project_id == project_id)):
        result[row.resource] = row.hard_limit
    return result


def usages(session, project_id: str) -> dict[str, int]:
    result = dict.fromkeys(DEFAULT_LIMITS | NETWORK_DEFAULT_LIMITS, 0)
    for row in session.scalars(sa.select(QuotaUsage).where(QuotaUsage.project_id == project_id)):
        result[row.resource] = row.in_use
    return result


def ensure_usage_rows(db: Database, project_id: str, resources) -> None:
    """Create missing usage rows (each in its own transaction; a concurrent
    creator winning the unique constraint is fine)."""
    with db.begin() as session:
        have = set(session.scalars(sa.select(QuotaUsage.resource).where(
            QuotaUsage.project_id == project_id, QuotaUsage.resource.in_(list(resources)))))
    for resource in set(resources) - have:
        try:
            with db.begin() as session:
                session.add(QuotaUsage(project_id=project_id, resource=resource, in_use=0))
        except sa_exc.IntegrityError:
            pass


def reserve(session, project_id: str, deltas: dict[str, int]) -> None:
    """Take ``deltas`` of the project's quota inside the caller's transaction.

    The usage rows must exist (:func:`ensure_usage_rows`). Raises
    QuotaExceeded naming the resource, request, usage and limit; the caller's
    transaction then rolls back whatever else was reserved.
    """
    project_limits = limits(session, project_id)
    for resource, delta in sorted(deltas.items()):
        if delta <= 0:
            continue
        limit = project_limits.get(resource, -1)
        guard = [QuotaUsage.project_id == project_id, QuotaUsage.resource == resource]
        if limit >= 0:
            guard.append(QuotaUsage.in_use + delta <= limit)
        changed = session.execute(sa.update(QuotaUsage).where(*guard)
                                  .values(in_use=QuotaUsage.in_use + delta)).rowcount
        if changed != 1:
            in_use = session.scalar(sa.select(QuotaUsage.in_use).where(
                QuotaUsage.project_id == project_id, QuotaUsage.resource == resource))
            raise exception.QuotaExceeded(resource=resource, project=project_id, requested=delta,
                                          in_use=in_use or 0, limit=limit)


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
    if resource not in DEFAULT_LIMITS and resource not in NETWORK_DEFAULT_LIMITS:
        raise exception.Invalid(reason=f"quota resource {resource!r} is unknown; known: "
                                       f"{', '.join(sorted(DEFAULT_LIMITS | NETWORK_DEFAULT_LIMITS))}")
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
