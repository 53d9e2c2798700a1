"""Migration rows: the one record of a resize or cold migration, and the one writer of them.

A move's row walks these statuses, each step a compare-and-swap (so a redelivered
message repeats nothing, and a claim is given back exactly once):

``pre-migrating`` (the API accepted it) -> ``migrating`` (the scheduler claimed the
destination) -> ``post-migrating`` (the source handed the server over) -> ``finished``
(VERIFY_RESIZE) -> ``confirming`` -> ``confirmed`` (source's claim given back), or
``reverting`` -> ``revert-finishing`` (destination's claim given back) -> ``reverted``;
``error`` from any step before ``finished`` (:func:`fail_move`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

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

#: The instance action each move records, as Nova names them.
ACTION_FOR_TYPE = {RESIZE: "resize", MIGRATION: "migrate"}


def flavor_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """The resources of an instance row (or a flavor row's dict) as a migration records them."""
    return {"id": row.get("flavor_id", row.get("id")), "vcpus": row["vcpus"], "memory_mb": row["memory_mb"],
            "disk_gb": row["disk_gb"]}


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


def fail_move(db: Database, instance_id: str, error: BaseException | str, host: str | None) -> bool:
    """End a resize or migration that failed (or stalled) before VERIFY_RESIZE: the server in
    error with a fault, its migration in error, and the claim the server does not rest on
    given back, all in one transaction. Whether it moved (False: no move in progress).

    Before the hand-over the server rests on its source with its old flavor, and the
    destination's claim goes; after it, the server is on the destination, takes the new
    flavor its claim there was made for, and the source's claim goes (the source keeps its
    set-aside disk until an operator removes it: there is no revert from error).
    """
    with db.begin() as session:
        instance = session.get(Instance, instance_id)
        if instance is None or instance.deleted or instance.task_state not in states.MOVE_TASKS:
            return False
        move = latest(session, instance_id, IN_PROGRESS)
        values: dict[str, Any] = {"vm_state": states.ERROR, "task_state": None}
        if move is not None:
            if not advance(session, move["id"], IN_PROGRESS, status=FAILED):
                return False
            if move["status"] == POST_MIGRATING or instance.host != move["source_host"]:
                new = move["new_flavor"]
                values.update(host=move["dest_host"], flavor_id=new["id"], vcpus=new["vcpus"],
                              memory_mb=new["memory_mb"], disk_gb=new["disk_gb"])
                give_back(session, move["source_host"], move["old_flavor"])
            elif move["status"] == MIGRATING:
                give_back(session, move["dest_host"], move["new_flavor"])
        if not states.swap(session, instance_id, {"task_state": states.MOVE_TASKS}, **values):
            return False
        add_fault(session, instance_id, error, host)
    LOG.warning("move of instance %s failed: %s", instance_id, error)
    return True


def abandon_on_delete(db: Database, instance_id: str, host: str) -> None:
    """For a server deleted while a move holds claims on two hosts: give back the claim of the
    host it is not deleted from (the delete gives back the other). Idempotent."""
    with db.begin() as session:
        move = latest(session, instance_id, BOTH_CLAIMED)
        if move is None or not advance(session, move["id"], BOTH_CLAIMED, status=FAILED):
            return
        if host == move["dest_host"]:
            give_back(session, move["source_host"], move["old_flavor"])
        else:
            give_back(session, move["dest_host"], move["new_flavor"])
