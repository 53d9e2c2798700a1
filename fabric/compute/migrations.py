"""Migration rows: the one record of a resize or cold migration, and the one writer of them.

A move's row walks these statuses, each step a compare-and-swap (so a redelivered
message repeats nothing, and a claim is given back exactly once):

``pre-migrating`` (the API accepted it) -> ``migrating`` (the scheduler claimed the
destination) -> ``post-migrating`` (the source handed the server over) -> ``finished``
(VERIFY_RESIZE) -> ``confirming`` -> ``confirmed`` (source's claim given back), or
``reverting`` -> ``revert-finishing`` (destination's claim given back) -> ``reverted``;
``error`` from any step before ``finished`` (:func:`fail_move`), or from any open step when
the server is deleted (:func:`abandon_on_delete`).

The project's compute quota follows the same steps, so it too moves exactly once: a
resize takes the flavor's growth when the API accepts it (so while a move is open the
project holds the larger of the two flavors, as Nova does), and the step that settles
the server on one flavor gives back what the other held beyond it: a revert (or a move
that fails before the hand-over) the growth, a confirm (or a move that fails after it)
the shrink, a delete whatever the move held beyond the flavor the delete gave back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from fabric.api import quota
from fabric.compute import states
from fabric.compute.faults import add_fault
from fabric.compute.states import (  # noqa: F401 (the statuses are also this module's vocabulary)
    CONFIRMED,
    CONFIRMING,
    FAILED,
    FINISHED,
    MIGRATING,
    MIGRATION,
    POST_MIGRATING,
    PRE_MIGRATING,
    RESIZE,
    REVERT_FINISHING,
    REVERTED,
    REVERTING,
)
from fabric.db import Database
from fabric.db.models import Instance, Migration
from fabric.exception import NotFound
from fabric.scheduler.claims import release_usage

LOG = logging.getLogger(__name__)

#: Statuses of a move still on its way to VERIFY_RESIZE.
IN_PROGRESS = (PRE_MIGRATING, MIGRATING, POST_MIGRATING)
#: Statuses in which both hosts hold a claim (destination claimed, not yet confirmed or reverted).
BOTH_CLAIMED = (MIGRATING, POST_MIGRATING, FINISHED, CONFIRMING, REVERTING)

#: Statuses of a move not yet settled (confirmed, reverted or failed): the project holds the larger flavor.
OPEN = (*IN_PROGRESS, FINISHED, CONFIRMING, REVERTING, REVERT_FINISHING)

#: The instance action each move records, as Nova names them.
ACTION_FOR_TYPE = {RESIZE: "resize", MIGRATION: "migrate"}


def flavor_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The resources of an instance row (or a flavor row's dict) as a migration records them."""
    return {"id": row.get("flavor_id", row.get("id")), "vcpus": row["vcpus"], "memory_mb": row["memory_mb"],
            "disk_gb": row["disk_gb"]}


def quota_of(flavor: Mapping[str, Any]) -> dict[str, int]:
    """The project quota a flavor (as :func:`flavor_of` records it) takes."""
    return {"cores": int(flavor["vcpus"]), "ram": int(flavor["memory_mb"])}


def quota_beyond(flavor: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, int]:
    """What of the project's quota ``flavor`` takes beyond ``other`` (never negative): the
    growth of a resize is ``quota_beyond(new, old)``, its shrink ``quota_beyond(old, new)``."""
    mine, theirs = quota_of(flavor), quota_of(other)
    return {resource: max(mine[resource] - theirs[resource], 0) for resource in mine}


def give_back_quota(session: orm.Session, project_id: str, deltas: Mapping[str, int]) -> None:
    """Give ``deltas`` back to the project's compute quota, in the caller's transaction (the one
    whose compare-and-swap on the migration makes this happen once)."""
    quota.release(session, project_id, dict(deltas))


def as_dict(row: Migration) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in sa.inspect(Migration).mapper.column_attrs}


def create(session: orm.Session, instance: Mapping[str, Any], migration_type: str, new_flavor: dict[str, Any],
           requested_host: str | None = None) -> str:
    """Record a move of ``instance`` (a row dict) in the caller's transaction; its id."""
    row = Migration(instance_id=instance["id"], migration_type=migration_type, status=PRE_MIGRATING,
                    source_host=instance["host"], requested_host=requested_host, old_flavor=flavor_of(instance),
                    new_flavor=dict(new_flavor), old_vm_state=instance["vm_state"])
    session.add(row)
    session.flush()
    return row.id


def get(db: Database, migration_id: str) -> dict[str, Any]:
    """The migration as a dict. Raises NotFound."""
    with db.begin() as session:
        row = session.get(Migration, migration_id)
        if row is None:
            raise NotFound(kind="Migration", ident=migration_id)
        return as_dict(row)


def latest(session: orm.Session, instance_id: str, statuses: tuple[str, ...]) -> dict[str, Any] | None:
    """The instance's newest migration in one of ``statuses``, or None."""
    row = session.scalars(sa.select(Migration).where(Migration.instance_id == instance_id,
                                                     Migration.status.in_(statuses))
                          .order_by(Migration.created_at.desc()).limit(1)).first()
    return None if row is None else as_dict(row)


def advance(session: orm.Session, migration_id: str, expected: str | tuple[str, ...], **values: Any) -> bool:
    """Move the migration on from ``expected`` status(es), in the caller's transaction: whether it moved."""
    accepted = (expected,) if isinstance(expected, str) else expected
    result = session.execute(sa.update(Migration).where(Migration.id == migration_id,
                                                        Migration.status.in_(accepted))
                             .values(**values).execution_options(synchronize_session=False))
    return result.rowcount == 1


def give_back(session: orm.Session, host: str | None, flavor: Mapping[str, Any]) -> None:
    """Give ``flavor``'s resources back to ``host``'s claims, in the caller's transaction (the one
    whose compare-and-swap on the migration makes this happen once)."""
    if host:
        release_usage(session, host, flavor)


class _MovedOn(Exception):
    """The server or its move changed under :func:`fail_move`: roll its transaction back."""


def fail_move(db: Database, instance_id: str, error: BaseException | str, host: str | None) -> bool:
    """End a resize or migration that failed (or stalled) before VERIFY_RESIZE: the server in
    error with a fault, its migration in error, and the claim the server does not rest on
    given back, all in one transaction. Whether it moved (False: no move in progress).

    Before the hand-over the server rests on its source with its old flavor, and the
    destination's claim goes; after it, the server is on the destination, takes the new
    flavor its claim there was made for, and the source's claim goes (the source keeps its
    set-aside disk until the server is deleted: there is no revert from error). The project's
    quota keeps the flavor the server rests on.
    """
    try:
        with db.begin() as session:
            instance = session.get(Instance, instance_id)
            if instance is None or instance.deleted or instance.task_state not in states.MOVE_TASKS:
                return False
            move = latest(session, instance_id, IN_PROGRESS)
            values: dict[str, Any] = {"vm_state": states.ERROR, "task_state": None}
            if move is not None:
                if not advance(session, move["id"], IN_PROGRESS, status=FAILED):
                    raise _MovedOn
                if move["status"] == POST_MIGRATING or instance.host != move["source_host"]:
                    new = move["new_flavor"]
                    values.update(host=move["dest_host"], flavor_id=new["id"], vcpus=new["vcpus"],
                                  memory_mb=new["memory_mb"], disk_gb=new["disk_gb"])
                    give_back(session, move["source_host"], move["old_flavor"])
                    give_back_quota(session, instance.project_id, quota_beyond(move["old_flavor"], new))
                else:
                    if move["status"] == MIGRATING:
                        give_back(session, move["dest_host"], move["new_flavor"])
                    give_back_quota(session, instance.project_id, quota_beyond(move["new_flavor"], move["old_flavor"]))
            if not states.swap(session, instance_id, {"task_state": states.MOVE_TASKS}, **values):
                raise _MovedOn  # rolls back the claims and quota given back above
            add_fault(session, instance_id, error, host)
    except _MovedOn:
        return False
    LOG.warning("move of instance %s failed: %s", instance_id, error)
    return True


def abandon_on_delete(session: orm.Session, instance_id: str, host: str) -> None:
    """For a server deleted (on ``host``) while a move is open: end the move, give back the
    quota it held beyond the flavor the delete gave back (the server row's), and, while it
    holds claims on two hosts, the claim of the host it is not deleted from (the delete gives
    back the other), in the caller's transaction. Idempotent."""
    move = latest(session, instance_id, OPEN)
    if move is None or not advance(session, move["id"], OPEN, status=FAILED):
        return
    instance = session.get(Instance, instance_id)
    if instance is not None:
        held = {"vcpus": max(move["old_flavor"]["vcpus"], move["new_flavor"]["vcpus"]),
                "memory_mb": max(move["old_flavor"]["memory_mb"], move["new_flavor"]["memory_mb"])}
        give_back_quota(session, instance.project_id, quota_beyond(
            held, {"vcpus": instance.vcpus, "memory_mb": instance.memory_mb}))
    if move["status"] not in BOTH_CLAIMED:
        return
    if host == move["dest_host"]:
        give_back(session, move["source_host"], move["old_flavor"])
    else:
        give_back(session, move["dest_host"], move["new_flavor"])


def set_aside_elsewhere(session: orm.Session, instance_id: str, host: str) -> dict[str, Any] | None:
    """The instance's last move if it may have left a set-aside guest on a source other than
    ``host`` (one neither confirmed nor reverted: open, or failed after the source set its
    guest aside), else None."""
    row = session.scalars(sa.select(Migration).where(Migration.instance_id == instance_id)
                          .order_by(Migration.created_at.desc()).limit(1)).first()
    if row is None or row.status not in (*OPEN, FAILED) or row.source_host in (None, host):
        return None
    return as_dict(row)
