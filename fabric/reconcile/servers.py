"""Servers: one compute host's guests against its instance rows.

- stale: a live instance of this host, resting (no task) in a vm_state the power sync
  keeps, whose guest the hypervisor does not have;
- orphan: a guest of fabric's on the hypervisor with no live instance placed on this
  host (unknown to the database, deleted there, or placed elsewhere);
- unsynced: a resting instance whose power state (or the vm_state it implies) differs
  from its guest's.

An instance with a task running is its handler's business and never a finding.

Fixes, through the paths normal events take: stale and unsynced instances go through
the power sync's own step (:func:`fabric.compute.housekeeping.sync_power_state`: a
vanished guest ends in error with a fault; a power state is taken from the
hypervisor), with its compare-and-swap guard; an orphan guest is destroyed by the
driver as a delete destroys a guest, after checking again that no live instance of
this host has claimed its id since the report.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from fabric.compute import housekeeping, states
from fabric.db import Database
from fabric.db.models import Instance
from fabric.reconcile import ORPHAN, STALE, UNSYNCED, Finding, Fixes
from fabric.virt.driver import ComputeDriver, PowerState

LOG = logging.getLogger(__name__)


def _power_name(value: int | None) -> str:
    try:
        return PowerState(value).name
    except ValueError:
        return str(value)


def _orphan_reason(db: Database, uuid: str, host: str) -> str | None:
    """Why the guest ``uuid`` on ``host`` belongs to no live instance of this host (None: it does)."""
    with db.begin() as session:
        row = session.execute(sa.select(Instance.deleted, Instance.host, Instance.vm_state)
                              .where(Instance.id == uuid)).first()
    if row is None:
        return "no such server in the database"
    if row.deleted:
        return "the server is deleted in the database"
    if row.host != host:
        return f"the server is placed on {row.host or 'no host'}, not here"
    return None


def find(db: Database, driver: ComputeDriver, host: str) -> list[Finding]:
    """Every server finding on ``host`` (changes nothing)."""
    actual = driver.get_power_states()
    findings = []
    live = {inst["id"]: inst for inst in states.instances_on_host(db, host)}
    for inst in live.values():
        if inst["task_state"] is not None or inst["vm_state"] not in states.SYNCED_VM_STATES:
            continue  # a handler is at work on it, or nothing is expected of its guest
        power = actual.get(inst["id"])
        if power is None:
            findings.append(Finding(STALE, "server", inst["id"], f"{inst['vm_state']} in the database, "
                                    "no guest on the hypervisor", host))
            continue
        vm_state = states.VM_STATE_FOR_POWER.get(power, inst["vm_state"])
        if int(power) != inst["power_state"] or vm_state != inst["vm_state"]:
            findings.append(Finding(UNSYNCED, "server", inst["id"],
                                    f"database {inst['vm_state']}/{_power_name(inst['power_state'])}, "
                                    f"hypervisor {power.name} ({vm_state})", host))
    for uuid, power in sorted(actual.items()):
        if uuid not in live:
            reason = _orphan_reason(db, uuid, host)
            if reason is None:
                continue  # placed here since the instances were read: not an orphan
            findings.append(Finding(ORPHAN, "server", uuid, f"guest {power.name}: {reason}", host))
    return findings


def fix(db: Database, driver: ComputeDriver, host: str, findings: list[Finding], fixes: Fixes,
        graceful_timeout: float) -> None:
    """Repair the findings of the kinds ``fixes`` names (see the module docstring), marking
    each ``fixed`` or with its ``error``; never raises for one finding's failure."""
    for finding in findings:
        if not fixes.wants(finding.kind):
            continue
        try:
            if finding.kind == ORPHAN:
                finding.fixed = _destroy_orphan(db, driver, host, finding.ident, graceful_timeout)
                if not finding.fixed:
                    finding.error = "a live server of this host holds it now; left alone"
            else:
                finding.fixed = _sync_one(db, driver, host, finding.ident)
                if not finding.fixed:
                    finding.error = "the server changed since the report; left to its handler"
        except Exception as exc:  # noqa: BLE001 - one failed fix must not stop the others
            LOG.warning("reconcile: fixing %s failed: %s", finding.line(), exc)
            finding.error = f"{type(exc).__name__}: {exc}"


def _sync_one(db: Database, driver: ComputeDriver, host: str, instance_id: str) -> bool:
    rows = [inst for inst in states.instances_on_host(db, host) if inst["id"] == instance_id]
    if not rows:
        return False
    power = driver.get_power_states().get(instance_id)
    return housekeeping.sync_power_state(db, host, rows[0], power)


def _destroy_orphan(db: Database, driver: ComputeDriver, host: str, uuid: str, graceful_timeout: float) -> bool:
    if _orphan_reason(db, uuid, host) is None:
        return False  # a build placed here claimed it after the report
    driver.destroy(uuid, graceful_timeout=graceful_timeout)
    LOG.info("reconcile: destroyed orphan guest %s on %s", uuid, host)
    return True
