"""The compute worker's RPC endpoint: builds, acts on and deletes this host's guests.

Every handler moves the instance with compare-and-swap transitions
(:mod:`fabric.compute.states`) and is safe to run again on a redelivered
message. A failure records a fault on the instance and ends in a resting
state: a failed build is handed back to the scheduler (or ends in error), a
failed action ends in error, a delete that fails ends in error and can be
repeated. Nothing stays in a transient task state; the reaper
(:mod:`fabric.compute.housekeeping`) catches what a dead worker left.
"""

from __future__ import annotations

import logging
from typing import Any

from fabric import periodic
from fabric.compute import housekeeping, states
from fabric.compute.collaborators import default_collaborators
from fabric.compute.faults import record_fault
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.types import utcnow
from fabric.exception import FabricError, InstanceStateConflict, Invalid, NotFound
from fabric.manager import Manager
from fabric.virt import load_driver
from fabric.virt.driver import ComputeDriver, GuestSpec, NetworkInterface, PowerState

LOG = logging.getLogger(__name__)

#: vm_state a guest in each power state rests in (after an action or a sync).
VM_STATE_FOR_POWER = {
    PowerState.RUNNING: states.ACTIVE, PowerState.PAUSED: states.PAUSED,
    PowerState.SUSPENDED: states.SUSPENDED, PowerState.SHUTDOWN: states.STOPPED,
    PowerState.CRASHED: states.STOPPED,
}

#: action -> (task_state, vm_states it may start from, driver method)
ACTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "reboot_instance": (states.REBOOTING, (states.ACTIVE, states.STOPPED), "reboot"),
    "stop_instance": (states.POWERING_OFF, (states.ACTIVE, states.PAUSED, states.ERROR), "power_off"),
    "start_instance": (states.POWERING_ON, (states.STOPPED,), "power_on"),
    "pause_instance": (states.PAUSING, (states.ACTIVE,), "pause"),
    "unpause_instance": (states.UNPAUSING, (states.PAUSED,), "unpause"),
    "suspend_instance": (states.SUSPENDING, (states.ACTIVE,), "suspend"),
    "resume_instance": (states.RESUMING, (states.SUSPENDED,), "resume"),
}
#: A hard reboot is the way out of any resting state (the API offers it from these), under its own task.
HARD_REBOOT: tuple[str, tuple[str, ...], str] = (
    states.REBOOTING_HARD, (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED, states.ERROR), "reboot")


#: A collaborator argument of ComputeManager left to :func:`default_collaborators`.
DEFAULT: Any = object()


def action_states(action: str, **kwargs: Any) -> tuple[str, tuple[str, ...], str]:
    """(task_state, vm_states it may start from, driver method) of ``action`` with its arguments."""
    if action == "reboot_instance" and kwargs.get("hard"):
        return HARD_REBOOT
    return ACTIONS[action]


class ComputeManager(Manager):
    """Server side of :mod:`fabric.compute.rpcapi`; same method names."""

    topic = "compute"

    def __init__(self, settings: Settings, host: str | None = None, db: Database | None = None,
                 transport: Any = None, *, driver: ComputeDriver | None = None, addresses=DEFAULT,
                 network=DEFAULT, rescheduler=DEFAULT, claims=DEFAULT, images=DEFAULT) -> None:
        """Collaborators not given are the real ones over ``transport``; ``rescheduler=None``
        means a failed build ends in error instead of being handed back to the scheduler."""
        super().__init__(settings, host=host, db=db, transport=transport)
        if self.db is None:
            self.db = Database.from_settings(settings)
        self.driver = driver or load_driver(settings)
        given = {"addresses": addresses, "network": network, "rescheduler": rescheduler,
                 "claims": claims, "images": images}
        if any(v is DEFAULT for v in given.values()):
            defaults = default_collaborators(settings, self.db, transport)
            given = {k: defaults[k] if v is DEFAULT else v for k, v in given.items()}
        self.addresses = given["addresses"]
        self.network = given["network"]
        self.rescheduler = given["rescheduler"]
        self.claims = given["claims"]
        self.images = given["images"]
        self.compute_settings = settings.compute

    def capabilities(self) -> dict[str, Any]:
        return {"hypervisor_type": self.driver.hypervisor_type,
                "availability_zone": self.compute_settings.availability_zone}

    # --- worker lifecycle ------------------------------------------------------

    def init_host(self) -> None:
        """Connect the driver, report resources, and settle what a previous run left mid-way."""
        self.driver.init_host(self.host)
        ctx = RequestContext.admin()
        housekeeping.report_resources(self)
        housekeeping.recover_after_restart(self, ctx)

    def cleanup_host(self) -> None:
        self.driver.cleanup_host()

    # --- build -------------------------------------------------------------------

    def build_instance(self, ctx: RequestContext, instance_id: str) -> None:
        """Allocate addresses, plug the NICs and spawn the guest: building -> active.

        Runs again harmlessly on a redelivered message (allocation and plugging
        are idempotent, an existing guest is kept). On failure: a fault, the
        partial work undone, then rescheduled or error.
        """
        try:
            instance = states.compare_and_swap(
                self.db, instance_id, {"vm_state": states.BUILDING, "task_state": states.BUILD_TASKS,
                                       "host": self.host}, task_state=states.NETWORKING)
        except (NotFound, InstanceStateConflict) as exc:
            LOG.info("not building instance %s: %s", instance_id, exc)
            return
        try:
            vifs = self._allocate_and_plug(ctx, instance)
            instance = states.compare_and_swap(
                self.db, instance_id, {"task_state": states.NETWORKING, "host": self.host},
                task_state=states.SPAWNING, network_info=vifs)
            if not self.driver.instance_exists(instance_id):
                self.driver.spawn(self._guest_spec(ctx, instance, vifs))
            power = self.driver.get_info(instance_id).power_state
            states.compare_and_swap(
                self.db, instance_id, {"task_state": states.SPAWNING, "host": self.host},
                vm_state=states.ACTIVE, task_state=None, power_state=int(power), launched_at=utcnow())
            LOG.info("instance %s is active on %s", instance_id, self.host)
        except Exception as exc:  # noqa: BLE001 - every failure must end in a resting state
            self._build_failed(ctx, instance, exc)

    def _allocate_and_plug(self, ctx: RequestContext, instance: dict) -> list[dict]:
        vifs = []
        for index, request in enumerate(instance.get("requested_networks") or []):
            vif = dict(self.addresses.allocate(ctx, instance, index, request))
            vif["index"] = index
            vifs.append(vif)
            # Record each allocation at once so a failure later can give it back.
            states.compare_and_swap(self.db, instance["id"], {"task_state": states.NETWORKING},
                                    network_info=vifs)
        for vif in vifs:
            vif.update(self.network.plug(ctx, self.host, vif))
        return vifs

    def _guest_spec(self, ctx: RequestContext, instance: dict, vifs: list[dict]) -> GuestSpec:
        interfaces = tuple(NetworkInterface(id=v["id"], mac=v["mac"], bridge=v.get("bridge"), tap=v.get("tap"),
                                            mtu=v.get("mtu")) for v in vifs)
        return GuestSpec(uuid=instance["id"], name=instance.get("display_name") or "", vcpus=instance["vcpus"],
                         memory_mb=instance["memory_mb"], disk_gb=instance["disk_gb"],
                         image=self.images.boot_image(ctx, instance), interfaces=interfaces)

    def _build_failed(self, ctx: RequestContext, instance: dict, exc: Exception) -> None:
        instance_id = instance["id"]
        LOG.warning("build of instance %s on %s failed: %s", instance_id, self.host, exc,
                    exc_info=not isinstance(exc, FabricError))
        if isinstance(exc, (NotFound, InstanceStateConflict)) and _instance_gone_or_deleting(self.db, instance_id):
            # Deleted while building: the delete releases the NICs recorded on the row; the
            # guest may have been created after the delete destroyed it, so destroy it again.
            self.driver.destroy(instance_id)
            return
        record_fault(self.db, instance_id, exc, self.host)
        self._undo_build(ctx, instance_id)
        transient = (states.NETWORKING, states.SPAWNING)
        retry = not isinstance(exc, Invalid) and self.rescheduler is not None
        try:
            if retry:
                states.compare_and_swap(self.db, instance_id, {"task_state": transient, "host": self.host},
                                        task_state=states.SCHEDULING, network_info=[])
                try:
                    self.rescheduler.reschedule(ctx, instance_id, self.host, str(exc)[:255])
                    return
                except Exception as resched_exc:  # noqa: BLE001
                    record_fault(self.db, instance_id, resched_exc, self.host)
                    transient = (states.SCHEDULING,)
            states.compare_and_swap(self.db, instance_id, {"task_state": transient},
                                    vm_state=states.ERROR, task_state=None, power_state=int(PowerState.NOSTATE))
        except (NotFound, InstanceStateConflict) as cas_exc:
            LOG.info("instance %s changed while its failed build was handled: %s", instance_id, cas_exc)

    def _undo_build(self, ctx: RequestContext, instance_id: str) -> None:
        """Destroy the guest, unplug and release what the failed build set up (best effort)."""
        try:
            self.driver.destroy(instance_id)
        except Exception:  # noqa: BLE001
            LOG.exception("could not destroy the guest of failed build %s", instance_id)
        try:
            instance = states.get_instance(self.db, instance_id)
        except NotFound:
            return
        self._release_network(ctx, instance, strict=False)

    def _release_network(self, ctx: RequestContext, instance: dict, strict: bool) -> None:
        for vif in instance.get("network_info") or []:
            steps = ((self.network.unplug, (ctx, self.host, vif)),
                     (self.addresses.release, (ctx, instance, vif.get("index", 0), vif)))
            for step, args in steps:
                try:
                    step(*args)
                except Exception:
                    if strict:
                        raise
                    LOG.exception("cleanup of NIC %s of instance %s failed", vif.get("id"), instance["id"])

    # --- delete ------------------------------------------------------------------

    def terminate_instance(self, ctx: RequestContext, instance_id: str) -> None:
        """Destroy the guest, unplug its NICs, release its addresses and claim; mark it deleted.

        Safe to repeat, from any state (a repeat on a deleted instance only
        makes sure its claim is released). A failure ends in error with a fault.
        """
        try:
            instance = states.compare_and_swap(self.db, instance_id, {"host": self.host},
                                               task_state=states.DELETING)
        except (NotFound, InstanceStateConflict):
            self.claims.release(instance_id, self.host)  # a crash after marking deleted left the claim
            return
        try:
            self.driver.destroy(instance_id, graceful_timeout=self.compute_settings.guest_shutdown_timeout)
            self._release_network(ctx, instance, strict=True)
            states.compare_and_swap(self.db, instance_id, {"task_state": states.DELETING},
                                    vm_state=states.DELETED, task_state=None, deleted=True,
                                    power_state=int(PowerState.NOSTATE), terminated_at=utcnow())
        except Exception as exc:  # noqa: BLE001
            LOG.warning("delete of instance %s failed: %s", instance_id, exc)
            record_fault(self.db, instance_id, exc, self.host)
            self._settle(instance_id, states.DELETING, states.ERROR)
            return
        self.claims.release(instance_id, self.host)
        LOG.info("instance %s deleted", instance_id)

    # --- actions -----------------------------------------------------------------

    def _act(self, ctx: RequestContext, name: str, instance_id: str, **driver_kwargs: Any) -> None:
        """Run one action: task set by CAS, the driver call, then a resting state.

        An instance not in a state the action starts from is left alone (logged).
        A driver failure ends in error with a fault. Never raises: actions are
        casts, and their outcome is on the instance row.
        """
        task, from_states, method = action_states(name, **driver_kwargs)
        try:
            # task_state is None (direct call) or already ours (set by compute.api before the cast).
            states.compare_and_swap(self.db, instance_id, {"vm_state": from_states, "task_state": (None, task),
                                                           "host": self.host}, task_state=task)
        except (NotFound, InstanceStateConflict) as exc:
            LOG.info("not running %s on instance %s: %s", name, instance_id, exc)
            return
        try:
            getattr(self.driver, method)(instance_id, **driver_kwargs)
        except Exception as exc:  # noqa: BLE001
            LOG.warning("%s of instance %s failed: %s", name, instance_id, exc)
            record_fault(self.db, instance_id, exc, self.host)
            self._settle(instance_id, task, states.ERROR)
            return  # the outcome is on the instance (error + fault): a retried cast would only conflict
        self._settle(instance_id, task, None)

    def _settle(self, instance_id: str, task: str, vm_state: str | None) -> None:
        """End ``task``: vm_state from the guest's power state (or ``vm_state`` if given)."""
        try:
            power = self.driver.get_info(instance_id).power_state
        except Exception:  # noqa: BLE001 - a guest we cannot read rests in error
            power, vm_state = PowerState.NOSTATE, vm_state or states.ERROR
        try:
            states.compare_and_swap(self.db, instance_id, {"task_state": task},
                                    vm_state=vm_state or VM_STATE_FOR_POWER.get(power, states.ERROR),
                                    task_state=None, power_state=int(power))
        except (NotFound, InstanceStateConflict) as exc:
            LOG.info("instance %s changed during %s: %s", instance_id, task, exc)

    def reboot_instance(self, ctx: RequestContext, instance_id: str, hard: bool = False) -> None:
        """Soft (ACPI, then hard after compute.guest_shutdown_timeout) or hard reboot."""
        self._act(ctx, "reboot_instance", instance_id, hard=hard,
                  timeout=self.compute_settings.guest_shutdown_timeout)

    def stop_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, "stop_instance", instance_id, timeout=self.compute_settings.guest_shutdown_timeout)

    def start_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, "start_instance", instance_id)

    def pause_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, "pause_instance", instance_id)

    def unpause_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, "unpause_instance", instance_id)

    def suspend_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, "suspend_instance", instance_id)

    def resume_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, "resume_instance", instance_id)

    def get_console_output(self, ctx: RequestContext, instance_id: str, max_bytes: int = 65536) -> str:
        """The tail of the guest's serial console. Raises GuestNotFound."""
        return self.driver.get_console_output(instance_id, max_bytes=max_bytes)

    def get_available_resource(self, ctx: RequestContext) -> dict[str, Any]:
        return self.driver.get_available_resource().to_dict()

    # --- periodic tasks ------------------------------------------------------------

    @periodic.periodic_task(lambda self: self.settings.compute.resource_report_interval, run_immediately=True)
    def report_resources(self, ctx: RequestContext) -> None:
        housekeeping.report_resources(self)

    @periodic.periodic_task(lambda self: self.settings.compute.power_sync_interval)
    def sync_power_states(self, ctx: RequestContext) -> None:
        housekeeping.sync_power_states(self)

    @periodic.periodic_task(lambda self: self.settings.compute.reap_interval)
    def reap_stuck_instances(self, ctx: RequestContext) -> None:
        housekeeping.reap_stuck_instances(self)


def _instance_gone_or_deleting(db: Database, instance_id: str) -> bool:
    try:
        return states.get_instance(db, instance_id)["task_state"] == states.DELETING
    except NotFound:
        return True
