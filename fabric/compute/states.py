"""Instance states and the compare-and-swap update every transition goes through.

``vm_state`` is where an instance rests; ``task_state`` what is being done to
it now. A transition is one ``UPDATE instances SET ... WHERE id = :id AND
<expected states>`` whose row count says whether it happened, so two workers
(or a redelivered message) can never both move the same instance: no
``SELECT ... FOR UPDATE`` is involved. Every transition that sets a task
also stamps ``task_started_at`` so the reaper can find work that stalled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import Instance
from fabric.db.types import utcnow
from fabric.exception import InstanceStateConflict, NotFound

# vm_state
BUILDING = "building"
ACTIVE = "active"
STOPPED = "stopped"
PAUSED = "paused"
SUSPENDED = "suspended"
ERROR = "error"
DELETED = "deleted"

# task_state
SCHEDULING = "scheduling"
NETWORKING = "networking"
SPAWNING = "spawning"
REBOOTING = "rebooting"
REBOOTING_HARD = "rebooting_hard"
POWERING_OFF = "powering-off"
POWERING_ON = "powering-on"
PAUSING = "pausing"
UNPAUSING = "unpausing"
SUSPENDING = "suspending"
RESUMING = "resuming"
DELETING = "deleting"

#: Tasks of a build in progress on a compute host.
BUILD_TASKS = (None, SCHEDULING, NETWORKING, SPAWNING)


def _condition(column: sa.ColumnElement, expected: Any) -> sa.ColumnElement:
    if isinstance(expected, (tuple, list, set, frozenset)):
        values = list(expected)
        clauses = []
        if None in values:
            clauses.append(column.is_(None))
            values = [v for v in values if v is not None]
        if values:
            clauses.append(column.in_(values))
        return sa.or_(*clauses) if len(clauses) > 1 else clauses[0]
    return column.is_(None) if expected is None else column == expected


def compare_and_swap(db: Database, instance_id: str, expected: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    """Apply ``values`` to the instance only if it is in the ``expected`` states.

    ``expected`` maps columns (vm_state, task_state, host ...) to the value
    expected, or a collection of accepted values (None means NULL). The instance must not
    be deleted. Setting ``task_state`` to a task stamps ``task_started_at``.
    Returns the row as it is after the update. Raises NotFound when no such
    instance exists, InstanceStateConflict (naming the actual and expected
    state) when it is not in an expected state; nothing is changed then.
    """
    if values.get("task_state") is not None and "task_started_at" not in values:
        values["task_started_at"] = utcnow()
    where = [Instance.id == instance_id, Instance.deleted.is_(False)]
    for name, accepted in expected.items():
        where.append(_condition(getattr(Instance, name), accepted))
    with db.begin() as session:
        result = session.execute(sa.update(Instance).where(*where).values(**values)
                                 .execution_options(synchronize_session=False))
        row = session.get(Instance, instance_id, populate_existing=True)
        if result.rowcount == 1:
            return as_dict(row)
    if row is None or row.deleted:
        raise NotFound(kind="Instance", ident=instance_id)
    for name, accepted in expected.items():
        actual = getattr(row, name)
        allowed = list(accepted) if isinstance(accepted, (tuple, list, set, frozenset)) else [accepted]
        if actual not in allowed:
            raise InstanceStateConflict(instance=instance_id, attr=name, actual=actual, expected=allowed)
    raise InstanceStateConflict(instance=instance_id, attr="state", actual="changed concurrently",
                                expected=[f"{k}={v}" for k, v in expected.items()])


def as_dict(row: Instance) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in sa.inspect(Instance).mapper.column_attrs}


def get_instance(db: Database, instance_id: str, *, include_deleted: bool = False) -> dict[str, Any]:
    """The instance row as a dict. Raises NotFound."""
    with db.begin() as session:
        row = session.get(Instance, instance_id)
        if row is None or (row.deleted and not include_deleted):
            raise NotFound(kind="Instance", ident=instance_id)
        return as_dict(row)


def instances_on_host(db: Database, host: str, columns: Iterable[str] = ("id", "vm_state", "task_state",
                      "power_state", "task_started_at")) -> list[dict[str, Any]]:
    """The live (not deleted) instances placed on ``host``, as small dicts."""
    cols = [getattr(Instance, c) for c in columns]
    with db.begin() as session:
        rows = session.execute(sa.select(*cols).where(Instance.host == host, Instance.deleted.is_(False)))
        return [dict(zip(columns, row, strict=True)) for row in rows]
