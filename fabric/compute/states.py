"""The server state machine: instance states, the actions between them, and the
compare-and-swap update every transition goes through.

This is the one home of these rules: the HTTP API, compute's api, the compute
worker, its housekeeping and the scheduler import them from here.

``vm_state`` is where an instance rests; ``task_state`` what is being done to
it now. A transition is one ``UPDATE instances SET ... WHERE id = :id AND
<expected states>`` whose row count says whether it happened, so two workers
(or a redelivered message) can never both move the same instance: no
``SELECT ... FOR UPDATE`` is involved. Every transition that sets a task
also stamps ``task_started_at`` so the reaper can find work that stalled.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from fabric.db import Database
from fabric.db.models import Instance
from fabric.db.types import utcnow
from fabric.exception import InstanceStateConflict, NotFound
from fabric.virt.driver import ComputeDriver, PowerState

LOG = logging.getLogger(__name__)

# vm_state: where an instance rests.
BUILDING = "building"
ACTIVE = "active"
STOPPED = "stopped"
PAUSED = "paused"
SUSPENDED = "suspended"
ERROR = "error"
DELETED = "deleted"
#: Resized or cold-migrated, on its new host, waiting to be confirmed or reverted (VERIFY_RESIZE).
RESIZED = "resized"

#: Every vm_state fabric sets.
VM_STATES = (BUILDING, ACTIVE, STOPPED, PAUSED, SUSPENDED, ERROR, DELETED, RESIZED)

# task_state: what is being done to it now (None: nothing).
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
REBUILDING = "rebuilding"
IMAGE_SNAPSHOT = "image_snapshot"
# A resize or cold migration (fabric.compute.moves), in Nova's words: accepted (prep), the source
# host powering off and exporting the disk (migrating), handed to the destination host
# (migrated), the destination starting the guest (finish); then, from RESIZED, confirming or reverting.
RESIZE_PREP = "resize_prep"
RESIZE_MIGRATING = "resize_migrating"
RESIZE_MIGRATED = "resize_migrated"
RESIZE_FINISH = "resize_finish"
RESIZE_CONFIRMING = "resize_confirming"
RESIZE_REVERTING = "resize_reverting"

#: Every task_state fabric sets.
TASK_STATES = (SCHEDULING, NETWORKING, SPAWNING, REBOOTING, REBOOTING_HARD, POWERING_OFF, POWERING_ON,
               PAUSING, UNPAUSING, SUSPENDING, RESUMING, DELETING, REBUILDING, IMAGE_SNAPSHOT,
               RESIZE_PREP, RESIZE_MIGRATING, RESIZE_MIGRATED, RESIZE_FINISH, RESIZE_CONFIRMING, RESIZE_REVERTING)

#: Tasks of a build in progress on a compute host.
BUILD_TASKS = (None, SCHEDULING, NETWORKING, SPAWNING)

#: Tasks of a resize or cold migration before the server rests in RESIZED: a failure (or the
#: reaper) ends them through :func:`fabric.compute.migrations.fail_move`.
MOVE_TASKS = (RESIZE_PREP, RESIZE_MIGRATING, RESIZE_MIGRATED, RESIZE_FINISH)
#: Tasks of a resize's second half, started from RESIZED.
RESIZE_DECISION_TASKS = (RESIZE_CONFIRMING, RESIZE_REVERTING)
#: Tasks whose cast is redelivered after a worker restart (their handlers resume or finish them):
#: recovery at start leaves them alone, the reaper is the backstop.
RESUMED_TASKS = (*BUILD_TASKS, *MOVE_TASKS, *RESIZE_DECISION_TASKS, REBUILDING, IMAGE_SNAPSHOT)

# A move's own row (fabric.compute.migrations; the scheduler's destination claim moves it
# from PRE_MIGRATING to MIGRATING): its type and its status, as Nova names them.
RESIZE, MIGRATION = "resize", "migration"
PRE_MIGRATING, MIGRATING, POST_MIGRATING, FINISHED = "pre-migrating", "migrating", "post-migrating", "finished"
CONFIRMING, CONFIRMED = "confirming", "confirmed"
REVERTING, REVERT_FINISHING, REVERTED = "reverting", "revert-finishing", "reverted"
FAILED = "error"

#: Where a server may be rebuilt from (Nova: active, stopped, error), resized or migrated from
#: (active, stopped), snapshotted from (any resting state with a guest).
REBUILD_VM_STATES = (ACTIVE, STOPPED, ERROR)
MOVE_VM_STATES = (ACTIVE, STOPPED)
SNAPSHOT_VM_STATES = (ACTIVE, STOPPED, PAUSED, SUSPENDED)

#: vm_state a guest in each power state rests in (after an action or a power-state sync).
VM_STATE_FOR_POWER: Mapping[PowerState, str] = MappingProxyType({
    PowerState.RUNNING: ACTIVE, PowerState.PAUSED: PAUSED, PowerState.SUSPENDED: SUSPENDED,
    PowerState.SHUTDOWN: STOPPED, PowerState.CRASHED: STOPPED,
})

#: vm_states whose power the power-state sync keeps in line with the hypervisor.
SYNCED_VM_STATES = (ACTIVE, STOPPED, PAUSED, SUSPENDED)

#: The API status of a server in each move task or vm_state, as Nova shows them (a snapshot
#: shows the vm_state's status, as in Nova).
MOVE_STATUS: Mapping[str, str] = MappingProxyType({
    REBUILDING: "REBUILD", RESIZE_PREP: "RESIZE", RESIZE_MIGRATING: "RESIZE", RESIZE_MIGRATED: "RESIZE",
    RESIZE_FINISH: "RESIZE", RESIZE_REVERTING: "REVERT_RESIZE", RESIZED: "VERIFY_RESIZE",
})

#: vm_state a server must be in for its console to be read.
CONSOLE_VM_STATES = (ACTIVE, RESIZED)  # VERIFY_RESIZE: the moved guest runs on its new host


@dataclasses.dataclass(frozen=True)
class Action:
    """One server action: where it may start, what it is called on each layer.

    The API moves the instance from (``vm_states``, ``task_states``) to
    ``task`` by compare-and-swap and casts ``rpc_method`` with ``rpc_kwargs``
    to its host; the compute worker runs it from the same states (or from
    ``task``, which the API set) through the driver's ``driver_method``, then
    rests the instance in the vm_state of the guest's power state.
    """

    name: str
    rpc_method: str
    vm_states: tuple[str, ...]
    task_states: tuple[str | None, ...]
    task: str
    driver_method: str
    rpc_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


# The allowed vm_states follow the drivers' preconditions (fabric.virt.driver: a
# driver raises GuestStateInvalid from any other power state), so the API never
# accepts what the hypervisor will refuse: reboot needs a running or shut-off
# guest (not paused, not suspended), power_off anything but a suspended one.
# From error the guest's power is unknown: stop and hard reboot are offered as
# the ways out, and a driver that refuses leaves the server in error with a fault.
# A soft reboot asks the guest's OS, so it needs a running one; a hard reboot may
# override a soft reboot in progress (a guest that ignores ACPI).
ACTIONS: Mapping[str, Action] = MappingProxyType({a.name: a for a in (
    Action("reboot:SOFT", "reboot_instance", (ACTIVE,), (None,), REBOOTING, "reboot", {"hard": False}),
    Action("reboot:HARD", "reboot_instance", (ACTIVE, STOPPED, ERROR), (None, REBOOTING), REBOOTING_HARD,
           "reboot", {"hard": True}),
    Action("os-stop", "stop_instance", (ACTIVE, PAUSED, ERROR), (None,), POWERING_OFF, "power_off"),
    Action("os-start", "start_instance", (STOPPED,), (None,), POWERING_ON, "power_on"),
    Action("pause", "pause_instance", (ACTIVE,), (None,), PAUSING, "pause"),
    Action("unpause", "unpause_instance", (PAUSED,), (None,), UNPAUSING, "unpause"),
    Action("suspend", "suspend_instance", (ACTIVE,), (None,), SUSPENDING, "suspend"),
    Action("resume", "resume_instance", (SUSPENDED,), (None,), RESUMING, "resume"),
)})


def reboot_action(hard: bool) -> Action:
    """The hard or the soft reboot."""
    return ACTIONS["reboot:HARD" if hard else "reboot:SOFT"]


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


def _swap_statement(instance_id: str, expected: Mapping[str, Any], values: dict[str, Any]) -> sa.Update:
    """The UPDATE of a transition (stamping ``task_started_at`` when it sets a task)."""
    if values.get("task_state") is not None and "task_started_at" not in values:
        values["task_started_at"] = utcnow()
    where = [Instance.id == instance_id, Instance.deleted.is_(False)]
    for name, accepted in expected.items():
        where.append(_condition(getattr(Instance, name), accepted))
    return sa.update(Instance).where(*where).values(**values)


def swap(session: orm.Session, instance_id: str, expected: Mapping[str, Any], **values: Any) -> bool:
    """:func:`compare_and_swap` inside the caller's transaction: whether the row moved.

    For a transition that must commit together with other writes (a quota
    given back on delete). Nothing is changed when it returns False.
    """
    result = session.execute(_swap_statement(instance_id, expected, values)
                             .execution_options(synchronize_session=False))
    return result.rowcount == 1


#: The backends whose UPDATE can return the row it changed.
_RETURNING_BACKENDS = ("postgresql", "sqlite")
#: Every column of an instance row, labelled by attribute name (what :func:`as_dict` gives).
_INSTANCE_COLUMNS = tuple(attr.columns[0].label(attr.key) for attr in sa.inspect(Instance).mapper.column_attrs)


def compare_and_swap(db: Database, instance_id: str, expected: Mapping[str, Any], **values: Any) -> dict[str, Any]:
    """Apply ``values`` to the instance only if it is in the ``expected`` states.

    ``expected`` maps columns (vm_state, task_state, host ...) to the value
    expected, or a collection of accepted values (None means NULL). The instance must not
    be deleted. Setting ``task_state`` to a task stamps ``task_started_at``.
    Returns the row as it is after the update. Raises NotFound when no such
    instance exists, InstanceStateConflict (see :func:`require`) otherwise;
    nothing is changed then.
    """
    if db.backend in _RETURNING_BACKENDS:
        # One statement, committed alone, that moves the row and hands it back: a transaction
        # of UPDATE and SELECT cost four round trips (BEGIN, UPDATE, SELECT, COMMIT), and a
        # build makes four transitions (fake hosts' statements per server in the boot storm).
        with db.single_statement() as connection:
            moved_row = connection.execute(_swap_statement(instance_id, expected, values)
                                           .returning(*_INSTANCE_COLUMNS)).mappings().first()
        if moved_row is not None:
            return dict(moved_row)
        with db.read() as session:
            row = session.get(Instance, instance_id)
    else:  # MariaDB and MySQL have no UPDATE ... RETURNING: the update, then the read
        with db.begin() as session:
            moved = swap(session, instance_id, expected, **values)
            row = session.get(Instance, instance_id, populate_existing=True)
            if moved:
                return as_dict(row)
    if row is None or row.deleted:
        raise NotFound(kind="Instance", ident=instance_id)
    require(as_dict(row), expected)
    raise InstanceStateConflict(instance=row.id, attr="state", actual="changed concurrently",
                                expected=[f"{k}={v}" for k, v in expected.items()])


def require(instance: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Raise InstanceStateConflict (naming the first column of ``expected`` the instance
    is not in, its value and the values expected) unless the instance row ``instance``
    is in the ``expected`` states (as for :func:`compare_and_swap`)."""
    for name, accepted in expected.items():
        actual = instance[name]
        allowed = list(accepted) if isinstance(accepted, (tuple, list, set, frozenset)) else [accepted]
        if actual not in allowed:
            raise InstanceStateConflict(instance=instance["id"], attr=name, actual=actual, expected=allowed)


def settle(db: Database, driver: ComputeDriver, instance_id: str, task: str, vm_state: str | None = None) -> None:
    """End ``task`` on the instance: it rests in the vm_state of its guest's power state
    (:data:`VM_STATE_FOR_POWER`), or in ``vm_state`` when given; a guest the driver
    cannot read rests in error. An instance no longer in ``task`` is left alone."""
    try:
        power = driver.get_info(instance_id).power_state
    except Exception:  # noqa: BLE001 - a guest we cannot read rests in error
        power, vm_state = PowerState.NOSTATE, vm_state or ERROR
    try:
        compare_and_swap(db, instance_id, {"task_state": task},
                         vm_state=vm_state or VM_STATE_FOR_POWER.get(power, ERROR),
                         task_state=None, power_state=int(power))
    except (NotFound, InstanceStateConflict) as exc:
        LOG.info("instance %s changed during %s: %s", instance_id, task, exc)


def as_dict(row: Instance) -> dict[str, Any]:
    """The instance row's columns as a dict."""
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
    with db.read() as session:  # a read only (every host's periodic tasks): no BEGIN and COMMIT
        rows = session.execute(sa.select(*cols).where(Instance.host == host, Instance.deleted.is_(False)))
        return [dict(zip(columns, row, strict=True)) for row in rows]
