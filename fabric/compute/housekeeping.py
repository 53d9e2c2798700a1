"""The compute worker's periodic work and its recovery at start.

- resource reports: this host's capacity (and what the driver sees used) into
  ``compute_nodes``; usage columns belong to the schedulers' claims and are
  never written here;
- power-state sync: the hypervisor is the truth about power; a guest that
  died behind fabric's back shows as stopped after the next sync;
- the reaper: an instance whose task has run longer than
  ``compute.transient_timeout`` goes to error with a fault;
- recovery after a restart: deletes are finished, other interrupted actions
  settle from the guest's power state, builds, moves, rebuilds and snapshots wait
  for their redelivered message (the reaper is the backstop if it never comes; a
  stalled move ends through :func:`fabric.compute.migrations.fail_move`).

Each function takes only what it uses (database, driver, host, settings
values), never the manager: the manager calls down into this module.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

import sqlalchemy as sa

from fabric.compute import migrations, states
from fabric.compute.faults import record_fault
from fabric.db import Database
from fabric.db.models import ComputeNode
from fabric.db.types import utcnow
from fabric.exception import InstanceStateConflict, NotFound
from fabric.virt.driver import ComputeDriver, PowerState

LOG = logging.getLogger(__name__)


def report_resources(db: Database, driver: ComputeDriver, host: str, availability_zone: str | None) -> dict:
    """Write ``host``'s capacity into its compute_nodes row (created on first report); returns the values."""
    res = driver.get_available_resource()
    values = {
        "availability_zone": availability_zone,
        "hypervisor_type": res.hypervisor_type,
        "vcpus": res.vcpus, "memory_mb": res.memory_mb, "disk_gb": res.disk_gb,
        "stats": {"hypervisor_hostname": res.hypervisor_hostname, "guests_vcpus": res.vcpus_used,
                  "guests_memory_mb": res.memory_mb_used, "guests_disk_gb": res.disk_gb_used,
                  "guests_running": res.running_vms},
        "last_report": utcnow(),
    }
    for _ in range(2):
        with db.single_statement() as connection:  # one UPDATE, committed alone
            updated = connection.execute(sa.update(ComputeNode).where(ComputeNode.host == host)
                                         .values(**values)).rowcount
        if updated == 1:
            return values
        try:
            with db.begin() as session:
                session.add(ComputeNode(host=host, **values))
            return values
        except sa.exc.IntegrityError:
            continue  # created concurrently: update it
    return values


def sync_power_states(db: Database, driver: ComputeDriver, host: str) -> int:
    """Bring power_state (and the resting vm_state) in line with the hypervisor; returns rows changed.

    Instances with a task running are left alone (their handler settles them).
    A guest that vanished from the hypervisor puts its instance in error with a fault.
    """
    # The rows first, then the hypervisor: a build that finishes between the two reads is
    # still building in the rows (left alone), where the other order saw an ACTIVE row
    # whose guest was missing from an older listing and put a healthy server in error
    # (seen in the boot storm, tools/bench/storm.py, with queries waiting for a pool slot).
    instances = states.instances_on_host(db, host)
    actual_states = driver.get_power_states()
    return sum(sync_power_state(db, host, inst, actual_states.get(inst["id"])) for inst in instances)


def sync_power_state(db: Database, host: str, inst: dict, actual: PowerState | None) -> bool:
    """Bring one instance (a row of :func:`states.instances_on_host`) in line with its guest's
    power state ``actual`` (None: the guest is gone); whether its row changed.

    The one path for this: the periodic sync and reconciliation's fixes both come here.
    Left alone: an instance with a task running or not resting in a synced vm_state, and
    one that moved on since it was read (compare-and-swap).
    """
    if inst["task_state"] is not None or inst["vm_state"] not in states.SYNCED_VM_STATES:
        return False
    expected = {"task_state": None, "vm_state": inst["vm_state"], "power_state": inst["power_state"]}
    try:
        if actual is None:
            states.compare_and_swap(db, inst["id"], expected, vm_state=states.ERROR,
                                    power_state=int(PowerState.NOSTATE))
            record_fault(db, inst["id"], f"Guest vanished from the hypervisor on {host}", host)
            return True
        vm_state = states.VM_STATE_FOR_POWER.get(actual, inst["vm_state"])
        if int(actual) == inst["power_state"] and vm_state == inst["vm_state"]:
            return False
        states.compare_and_swap(db, inst["id"], expected, power_state=int(actual), vm_state=vm_state)
        LOG.info("instance %s: power state %s, now %s", inst["id"], actual.name, vm_state)
        return True
    except (NotFound, InstanceStateConflict):
        return False  # it moved on since we looked: the next sync sees the new state


def reap_stuck_instances(db: Database, host: str, timeout: float) -> list[str]:
    """Move ``host``'s instances whose task is older than ``timeout`` seconds to error (with a
    fault); returns their ids."""
    cutoff = utcnow() - datetime.timedelta(seconds=timeout)
    reaped = []
    rows = states.instances_on_host(db, host, ("id", "vm_state", "task_state", "task_started_at", "updated_at"))
    for inst in rows:
        started = inst["task_started_at"] or inst["updated_at"]
        if inst["task_state"] is None or started is None or started > cutoff:
            continue
        reason = f"Instance was stuck in task {inst['task_state']} for more than {timeout:g}s on host {host}"
        if inst["task_state"] in states.MOVE_TASKS:
            # A stalled resize or migration also ends its migration and gives back the claim
            # the server does not rest on.
            if not migrations.fail_move(db, inst["id"], reason, host):
                continue
        else:
            try:
                states.compare_and_swap(db, inst["id"],
                                        {"task_state": inst["task_state"], "task_started_at": inst["task_started_at"]},
                                        vm_state=states.ERROR, task_state=None)
            except (NotFound, InstanceStateConflict):
                continue  # its task moved on after all
            record_fault(db, inst["id"], reason, host)
        LOG.warning("instance %s was stuck in %s since %s: now error", inst["id"], inst["task_state"], started)
        reaped.append(inst["id"])
    return reaped


def recover_after_restart(db: Database, driver: ComputeDriver, host: str,
                          finish_delete: Callable[[str], None]) -> None:
    """Settle what a previous run of the worker on ``host`` left in transition: interrupted
    deletes go to ``finish_delete(instance_id)``, other actions rest from the guest's power
    state, builds are left to their redelivered message."""
    for inst in states.instances_on_host(db, host):
        task = inst["task_state"]
        if task is None or task in states.RESUMED_TASKS:
            continue  # builds, moves, rebuilds, snapshots: the unacknowledged message comes back
        if task == states.DELETING:
            LOG.info("finishing the interrupted delete of instance %s", inst["id"])
            finish_delete(inst["id"])
        else:
            LOG.info("settling instance %s after interrupted %s", inst["id"], task)
            states.settle(db, driver, inst["id"], task)
