"""The compute worker's periodic work and its recovery at start.

- resource reports: this host's capacity (and what the driver sees used) into
  ``compute_nodes``; usage columns belong to the schedulers' claims and are
  never written here;
- power-state sync: the hypervisor is the truth about power; a guest that
  died behind fabric's back shows as stopped after the next sync;
- the reaper: an instance whose task has run longer than
  ``compute.transient_timeout`` goes to error with a fault;
- recovery after a restart: deletes are finished, other interrupted actions
  settle from the guest's power state, builds wait for their redelivered
  message (the reaper is the backstop if it never comes).
"""

from __future__ import annotations

import datetime
import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa

from fabric.compute import states
from fabric.compute.faults import record_fault
from fabric.context import RequestContext
from fabric.db.models import ComputeNode
from fabric.db.types import utcnow
from fabric.exception import InstanceStateConflict, NotFound
from fabric.virt.driver import PowerState

if TYPE_CHECKING:
    from fabric.compute.manager import ComputeManager

LOG = logging.getLogger(__name__)

#: vm_states whose power the sync keeps in line with the hypervisor.
_SYNCED_VM_STATES = (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED)


def report_resources(manager: ComputeManager) -> dict:
    """Write this host's capacity into its compute_nodes row (created on first report)."""
    res = manager.driver.get_available_resource()
    values = {
        "availability_zone": manager.compute_settings.availability_zone,
        "hypervisor_type": res.hypervisor_type,
        "vcpus": res.vcpus, "memory_mb": res.memory_mb, "disk_gb": res.disk_gb,
        "stats": {"hypervisor_hostname": res.hypervisor_hostname, "guests_vcpus": res.vcpus_used,
                  "guests_memory_mb": res.memory_mb_used, "guests_disk_gb": res.disk_gb_used,
                  "guests_running": res.running_vms},
        "last_report": utcnow(),
    }
    for _ in range(2):
        with manager.db.begin() as session:
            updated = session.execute(sa.update(ComputeNode).where(ComputeNode.host == manager.host)
                                      .values(**values).execution_options(synchronize_session=False))
            if updated.rowcount == 1:
                return values
        try:
            with manager.db.begin() as session:
                session.add(ComputeNode(host=manager.host, **values))
            return values
        except sa.exc.IntegrityError:
            continue  # created concurrently: update it
    return values


def sync_power_states(manager: ComputeManager) -> int:
    """Bring power_state (and the resting vm_state) in line with the hypervisor; returns rows changed.

    Instances with a task running are left alone (their handler settles them).
    A guest that vanished from the hypervisor puts its instance in error with a fault.
    """
    from fabric.compute.manager import VM_STATE_FOR_POWER  # the manager imports this module

    actual_states = manager.driver.get_power_states()
    changed = 0
    for inst in states.instances_on_host(manager.db, manager.host):
        if inst["task_state"] is not None or inst["vm_state"] not in _SYNCED_VM_STATES:
            continue
        actual = actual_states.get(inst["id"])
        expected = {"task_state": None, "vm_state": inst["vm_state"], "power_state": inst["power_state"]}
        try:
            if actual is None:
                states.compare_and_swap(manager.db, inst["id"], expected, vm_state=states.ERROR,
                                        power_state=int(PowerState.NOSTATE))
                record_fault(manager.db, inst["id"], f"Guest vanished from the hypervisor on {manager.host}",
                             manager.host)
                changed += 1
                continue
            vm_state = VM_STATE_FOR_POWER.get(actual, inst["vm_state"])
            if int(actual) == inst["power_state"] and vm_state == inst["vm_state"]:
                continue
            states.compare_and_swap(manager.db, inst["id"], expected, power_state=int(actual), vm_state=vm_state)
            LOG.info("instance %s: power state %s, now %s", inst["id"], actual.name, vm_state)
            changed += 1
        except (NotFound, InstanceStateConflict):
            continue  # it moved on since we looked: the next sync sees the new state
    return changed


def reap_stuck_instances(manager: ComputeManager) -> list[str]:
    """Move instances whose task is older than compute.transient_timeout to error; returns their ids."""
    timeout = manager.compute_settings.transient_timeout
    cutoff = utcnow() - datetime.timedelta(seconds=timeout)
    reaped = []
    rows = states.instances_on_host(manager.db, manager.host,
                                    ("id", "vm_state", "task_state", "task_started_at", "updated_at"))
    for inst in rows:
        started = inst["task_started_at"] or inst["updated_at"]
        if inst["task_state"] is None or started is None or started > cutoff:
            continue
        try:
            states.compare_and_swap(manager.db, inst["id"],
                                    {"task_state": inst["task_state"], "task_started_at": inst["task_started_at"]},
                                    vm_state=states.ERROR, task_state=None)
        except (NotFound, InstanceStateConflict):
            continue  # its task moved on after all
        record_fault(manager.db, inst["id"], f"Instance was stuck in task {inst['task_state']} for more than "
                     f"{timeout:g}s on host {manager.host}", manager.host)
        LOG.warning("instance %s was stuck in %s since %s: now error", inst["id"], inst["task_state"], started)
        reaped.append(inst["id"])
    return reaped


def recover_after_restart(manager: ComputeManager, ctx: RequestContext) -> None:
    """Settle what a previous run of this worker left in transition."""
    for inst in states.instances_on_host(manager.db, manager.host):
        task = inst["task_state"]
        if task is None or task in states.BUILD_TASKS:
            continue  # builds: the unacknowledged message comes back and resumes them
        if task == states.DELETING:
            LOG.info("finishing the interrupted delete of instance %s", inst["id"])
            manager.terminate_instance(ctx, inst["id"])
        else:
            LOG.info("settling instance %s after interrupted %s", inst["id"], task)
            manager._settle(inst["id"], task, None)
