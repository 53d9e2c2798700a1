"""The compute worker's RPC endpoint: builds, acts on and deletes this host's guests.

Every handler moves the instance with compare-and-swap transitions
(:mod:`fabric.compute.states`) and is safe to run again on a redelivered
message. A failure records a fault on the instance and ends in a resting
state: a failed build is handed back to the scheduler (or ends in error), a
failed action ends in error, a delete that fails ends in error and can be
repeated. Nothing stays in a transient task state; the reaper
(:mod:`fabric.compute.housekeeping`) catches what a dead worker left.

A build or delete that fails because the database cannot be reached is not a
failure of the guest: the handler raises, leaving the instance in its task,
and the RPC server runs it again once the database answers
(:mod:`fabric.rpc.server`); the run again resumes it from its task state.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from eventlet.semaphore import Semaphore

from fabric import metrics, periodic
from fabric.compute import housekeeping, instance_actions, states
from fabric.compute.collaborators import default_collaborators
from fabric.compute.faults import record_fault
from fabric.compute.moves import MovesMixin
from fabric.compute.volumes import VolumesMixin, volume_service
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.retry import is_connection_error
from fabric.db.types import utcnow
from fabric.exception import FabricError, InstanceStateConflict, Invalid, NotFound
from fabric.manager import Manager, callers_table
from fabric.reconcile import Fixes, log_findings
from fabric.reconcile import report as drift_report
from fabric.reconcile import servers as server_drift
from fabric.virt import load_driver
from fabric.virt.driver import ComputeDriver, GuestSpec, NetworkInterface, PowerState

LOG = logging.getLogger(__name__)

#: A collaborator argument of ComputeManager left to :func:`default_collaborators`.
DEFAULT: Any = object()


class ComputeManager(VolumesMixin, MovesMixin, Manager):
    """Server side of :mod:`fabric.compute.rpcapi`; same method names (rebuild, snapshot, resize
    and migrate: :class:`fabric.compute.moves.MovesMixin`; volumes:
    :class:`fabric.compute.volumes.VolumesMixin`)."""

    topic = "compute"
    #: Who may call each handler (checked on the message's signature before dispatch).
    rpc_callers = callers_table(
        build_instance=("scheduler",),
        terminate_instance=("api",), reboot_instance=("api",), stop_instance=("api",),
        start_instance=("api",), pause_instance=("api",), unpause_instance=("api",),
        suspend_instance=("api",), resume_instance=("api",), get_console_output=("api",), get_diagnostics=("api",),
        get_available_resource=("api", "scheduler"), reconcile_servers=("api",),
        rebuild_instance=("api",), snapshot_instance=("api",), resize_instance=("api",),
        confirm_resize=("api",), revert_resize=("api",), finish_resize=("compute",),
        finish_revert_resize=("compute",), drop_set_aside=("compute",),
        attach_volume=("api",), detach_volume=("api",))

    def __init__(self, settings: Settings, host: str | None = None, db: Database | None = None,
                 transport: Any = None, *, driver: ComputeDriver | None = None, addresses=DEFAULT,
                 network=DEFAULT, rescheduler=DEFAULT, claims=DEFAULT, images=DEFAULT, moves=DEFAULT,
                 disks=DEFAULT, volumes=DEFAULT) -> None:
        """Collaborators not given are the real ones over ``transport``; ``rescheduler=None``
        means a failed build ends in error instead of being handed back to the scheduler;
        ``volumes=None``: a host whose guests have no volumes."""
        super().__init__(settings, host=host, db=db, transport=transport)
        if self.db is None:
            self.db = Database.from_settings(settings)
        self.driver = driver or load_driver(settings)
        given = {"addresses": addresses, "network": network, "rescheduler": rescheduler,
                 "claims": claims, "images": images, "moves": moves, "disks": disks}
        if any(v is DEFAULT for v in given.values()):
            defaults = default_collaborators(settings, self.db, transport)
            given = {k: defaults[k] if v is DEFAULT else v for k, v in given.items()}
        self.addresses = given["addresses"]
        self.network = given["network"]
        self.rescheduler = given["rescheduler"]
        self.claims = given["claims"]
        self.images = given["images"]
        self.moves = given["moves"]
        self.disks = given["disks"]
        self.volumes = volume_service(self.db, transport) if volumes is DEFAULT else volumes
        #: The outbox of the reschedule and move casts (fabric.rpc.outbox), whose relay the service runs.
        self.outbox = getattr(self.rescheduler, "outbox", None) or getattr(self.moves, "outbox", None)
        self.compute_settings = settings.compute
        #: instance id -> the lock its build or delete holds while it runs in this process.
        self._instance_locks: dict[str, Semaphore] = {}

    def capabilities(self) -> dict[str, Any]:
        return {"hypervisor_type": self.driver.hypervisor_type,
                "availability_zone": self.compute_settings.availability_zone}

    # --- worker lifecycle ------------------------------------------------------

    def init_host(self) -> None:
        """Connect the driver, report resources, and settle what a previous run left mid-way."""
        self.driver.init_host(self.host)
        ctx = RequestContext.admin()
        self.report_resources(ctx)
        housekeeping.recover_after_restart(self.db, self.driver, self.host,
                                           lambda instance_id: self.terminate_instance(ctx, instance_id))

    def cleanup_host(self) -> None:
        self.driver.cleanup_host()

    # --- build -------------------------------------------------------------------

    def build_instance(self, ctx: RequestContext, instance_id: str) -> None:
        """Allocate addresses, plug the NICs and spawn the guest: building -> active.

        Runs again harmlessly on a redelivered message (allocation and plugging
        are idempotent, an existing guest is kept). On failure: a fault, the
        partial work undone, then rescheduled or error. Raises what the database
        raised when it could not be reached (the RPC server runs the build again
        once it answers: from ``networking`` or ``spawning`` on this host, the
        build resumes). Two deliveries of one build run one after the other.
        """
        # A redelivered build (its first delivery's broker connection broke) can arrive
        # while the first still runs here: run it after, so it finds the build finished
        # (and stops) or interrupted (and resumes it), never half-way (which it would
        # take for a failure and undo under the running build).
        with self._one_at_a_time(instance_id):
            self._build_instance(ctx, instance_id)

    @contextlib.contextmanager
    def _one_at_a_time(self, instance_id: str) -> Iterator[None]:
        """Hold the instance's lock in this process: its builds and deletes run one after the other."""
        lock = self._instance_locks.setdefault(instance_id, Semaphore())
        try:
            with lock:
                yield
        finally:
            if lock.balance == 1:  # nobody holds or waits for it
                self._instance_locks.pop(instance_id, None)

    def _build_instance(self, ctx: RequestContext, instance_id: str) -> None:
        started = time.perf_counter()
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
                attachments = self._connect_boot_volume(ctx, instance_id)
                self.driver.spawn(self._guest_spec(ctx, instance, vifs, attachments))
            power = self.driver.get_info(instance_id).power_state
            states.compare_and_swap(
                self.db, instance_id, {"task_state": states.SPAWNING, "host": self.host},
                vm_state=states.ACTIVE, task_state=None, power_state=int(power), launched_at=utcnow())
            metrics.COMPUTE_BUILDS.labels("active").inc()
            metrics.COMPUTE_BUILD_SECONDS.observe(time.perf_counter() - started)
            instance_actions.finish(self.db, ctx, instance_id, instance_actions.SUCCESS)
            LOG.info("instance %s is active on %s", instance_id, self.host)
        except Exception as exc:  # noqa: BLE001 - every failure must end in a resting state
            if is_connection_error(exc):
                raise  # not the guest's failure: resumed when the database is back
            self._build_failed(ctx, instance, exc)

    def _allocate_and_plug(self, ctx: RequestContext, instance: dict) -> list[dict]:
        vifs = []
        for index, request in enumerate(instance.get("requested_networks") or []):
            vif = dict(self.addresses.allocate(ctx, instance, index, request))
            vif["index"] = index
            vifs.append(vif)
            # Record each allocation at once so a failure later can give it back, and so can a
            # delete accepted meanwhile (it waits for this build, then releases what the row holds).
            row = states.compare_and_swap(self.db, instance["id"], {"task_state": (states.NETWORKING, states.DELETING)},
                                          network_info=vifs)
            if row["task_state"] == states.DELETING:
                raise InstanceStateConflict(instance=instance["id"], attr="task_state", actual=states.DELETING,
                                            expected=[states.NETWORKING])
        for vif in vifs:
            vif.update(self.network.plug(ctx, self.host, vif))
        return vifs

    def _guest_spec(self, ctx: RequestContext, instance: dict, vifs: list[dict],
                    attachments: list[dict] | None = None) -> GuestSpec:
        """The guest's definition; ``attachments``: the server's volume attachments as just read
        (None: read them here, once for both the boot disk and the volumes)."""
        interfaces = tuple(NetworkInterface(id=v["id"], mac=v["mac"], bridge=v.get("bridge"), tap=v.get("tap"),
                                            mtu=v.get("mtu")) for v in vifs)
        if attachments is None:
            attachments = self._attachments(ctx, instance["id"])
        return GuestSpec(uuid=instance["id"], name=instance.get("display_name") or "", vcpus=instance["vcpus"],
                         memory_mb=instance["memory_mb"], disk_gb=instance["disk_gb"],
                         image=self._boot_volume_image(ctx, instance, attachments)
                         or self.images.boot_image(ctx, instance),
                         interfaces=interfaces,
                         volumes=self._volume_disks(ctx, instance["id"], attachments))

    def _build_failed(self, ctx: RequestContext, instance: dict, exc: Exception) -> None:
        instance_id = instance["id"]
        LOG.warning("build of instance %s on %s failed: %s", instance_id, self.host, exc,
                    exc_info=not isinstance(exc, FabricError))
        if isinstance(exc, (NotFound, InstanceStateConflict)) and _instance_gone_or_deleting(self.db, instance_id):
            # Deleted while building: the delete, which waits for this build, releases the NICs
            # recorded on the row; a delete that ran elsewhere may have destroyed the guest before
            # it was created, so destroy it again.
            self.driver.destroy(instance_id)
            return
        record_fault(self.db, instance_id, exc, self.host)
        metrics.COMPUTE_BUILDS.labels("error").inc()
        self._undo_build(ctx, instance_id)
        transient = (states.NETWORKING, states.SPAWNING)
        retry = not isinstance(exc, Invalid) and self.rescheduler is not None
        try:
            if retry:
                # The swap back to scheduling and the reschedule request commit together: neither
                # is ever there without the other.
                with self.db.begin() as session:
                    if not states.swap(session, instance_id, {"task_state": transient, "host": self.host},
                                       task_state=states.SCHEDULING, network_info=[]):
                        raise InstanceStateConflict(instance=instance_id, attr="task_state/host",
                                                    actual="moved on", expected=f"{transient} on {self.host}")
                    staged = self.rescheduler.stage(session, ctx, instance_id, self.host, str(exc)[:255])
                try:
                    self.rescheduler.send(staged)
                    return
                except Exception as resched_exc:  # noqa: BLE001
                    record_fault(self.db, instance_id, resched_exc, self.host)
                    transient = (states.SCHEDULING,)
            states.compare_and_swap(self.db, instance_id, {"task_state": transient},
                                    vm_state=states.ERROR, task_state=None, power_state=int(PowerState.NOSTATE))
            instance_actions.finish(self.db, ctx, instance_id, instance_actions.ERROR, str(exc))
        except (NotFound, InstanceStateConflict) as cas_exc:
            LOG.info("instance %s changed while its failed build was handled: %s", instance_id, cas_exc)

    def _undo_build(self, ctx: RequestContext, instance_id: str) -> None:
        """Destroy the guest, unplug and release what the failed build set up (best effort).

        Addresses and ports are released only while the instance is still this host's.
        Once another host holds it (it was rescheduled while a redelivered build ran here
        again), the ports and addresses on its row are that host's build's: they keep their
        ids from attempt to attempt, so releasing them here would take them from under a
        server that is, or is about to be, ACTIVE there. Only this host's devices go then.
        """
        try:
            self.driver.destroy(instance_id)
        except Exception:  # noqa: BLE001
            LOG.exception("could not destroy the guest of failed build %s", instance_id)
        try:
            instance = states.get_instance(self.db, instance_id)
        except NotFound:
            return
        ours = instance.get("host") == self.host
        if not ours:
            LOG.info("instance %s moved on to host %s: its addresses and ports stay with it",
                     instance_id, instance.get("host"))
        self._release_network(ctx, instance, strict=False, addresses=ours)

    def _release_network(self, ctx: RequestContext, instance: dict, strict: bool, *, addresses: bool = True) -> None:
        """Unplug each NIC from this host and, with ``addresses``, release its address and port."""
        for vif in instance.get("network_info") or []:
            steps = [(self.network.unplug, (ctx, self.host, vif))]
            if addresses:
                steps.append((self.addresses.release, (ctx, instance, vif.get("index", 0), vif)))
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

        The instance is marked deleted (and so gone from the API) only once all of that is
        done, as Nova's is: a subnet its NICs used can be deleted as soon as the server reads
        404. A build of the instance running here is waited for first (it stops at its next
        step, leaving each NIC it took on the row), as Nova's delete waits on the instance's
        lock: otherwise a NIC the build was taking would outlive the server.

        Safe to repeat, from any state (a repeat on a deleted instance makes sure its
        move, if any, is ended and its claim released: a crash may have come between
        marking it deleted and those). A failure ends in error with a fault;
        an unreachable database is no failure: it raises, and the RPC server
        runs the delete again once the database answers.
        """
        with self._one_at_a_time(instance_id):
            self._terminate_instance(ctx, instance_id)

    def _terminate_instance(self, ctx: RequestContext, instance_id: str) -> None:
        try:
            instance = states.compare_and_swap(self.db, instance_id, {"host": self.host},
                                               task_state=states.DELETING)
        except NotFound:  # a crash after marking it deleted may have left the move and the claim
            self._abandon_moves_on_delete(ctx, instance_id)
            self.claims.release(instance_id, self.host)
            return
        except InstanceStateConflict:
            self.claims.release(instance_id, self.host)
            return
        try:
            self.driver.destroy(instance_id, graceful_timeout=self.compute_settings.guest_shutdown_timeout)
            self.driver.confirm_migration(instance_id)  # a guest a move set aside here (e.g. a same-host resize)
            self._release_network(ctx, instance, strict=True)
            self._release_volumes(ctx, instance_id)
            states.compare_and_swap(self.db, instance_id, {"task_state": states.DELETING},
                                    vm_state=states.DELETED, task_state=None, deleted=True,
                                    power_state=int(PowerState.NOSTATE), terminated_at=utcnow())
        except Exception as exc:  # noqa: BLE001
            if is_connection_error(exc):
                raise
            LOG.warning("delete of instance %s failed: %s", instance_id, exc)
            record_fault(self.db, instance_id, exc, self.host)
            states.settle(self.db, self.driver, instance_id, states.DELETING, states.ERROR)
            instance_actions.finish(self.db, ctx, instance_id, instance_actions.ERROR, str(exc))
            return
        instance_actions.finish(self.db, ctx, instance_id, instance_actions.SUCCESS)
        self._abandon_moves_on_delete(ctx, instance_id)  # a move's other claim and set-aside guest, if any
        self.claims.release(instance_id, self.host)
        LOG.info("instance %s deleted", instance_id)

    # --- actions -----------------------------------------------------------------

    def _act(self, ctx: RequestContext, action: states.Action, instance_id: str, **driver_kwargs: Any) -> None:
        """Run one action of :data:`states.ACTIONS`: task set by CAS, the driver call, then a resting state.

        The instance must be in one of the action's (vm_state, task_state)
        pairs, or in its task (set by the API before the cast); otherwise it is
        left alone (logged). A driver failure ends in error with a fault. Never
        raises: actions are casts, and their outcome is on the instance row.
        """
        try:
            states.compare_and_swap(self.db, instance_id, {"vm_state": action.vm_states,
                                                           "task_state": (*action.task_states, action.task),
                                                           "host": self.host}, task_state=action.task)
        except (NotFound, InstanceStateConflict) as exc:
            LOG.info("not running %s on instance %s: %s", action.name, instance_id, exc)
            return
        try:
            getattr(self.driver, action.driver_method)(instance_id, **driver_kwargs)
        except Exception as exc:  # noqa: BLE001
            LOG.warning("%s of instance %s failed: %s", action.name, instance_id, exc)
            record_fault(self.db, instance_id, exc, self.host)
            states.settle(self.db, self.driver, instance_id, action.task, states.ERROR)
            instance_actions.finish(self.db, ctx, instance_id, instance_actions.ERROR, str(exc))
            return  # the outcome is on the instance (error + fault): a retried cast would only conflict
        states.settle(self.db, self.driver, instance_id, action.task)
        instance_actions.finish(self.db, ctx, instance_id, instance_actions.SUCCESS)

    def reboot_instance(self, ctx: RequestContext, instance_id: str, hard: bool = False) -> None:
        """Soft (ACPI, then hard after compute.guest_shutdown_timeout) or hard reboot."""
        self._act(ctx, states.reboot_action(hard), instance_id, hard=hard,
                  timeout=self.compute_settings.guest_shutdown_timeout)

    def stop_instance(self, ctx: RequestContext, instance_id: str) -> None:
        """Shut the guest off (ACPI first, for up to compute.guest_shutdown_timeout)."""
        self._act(ctx, states.ACTIONS["os-stop"], instance_id, timeout=self.compute_settings.guest_shutdown_timeout)

    def start_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, states.ACTIONS["os-start"], instance_id)

    def pause_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, states.ACTIONS["pause"], instance_id)

    def unpause_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, states.ACTIONS["unpause"], instance_id)

    def suspend_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, states.ACTIONS["suspend"], instance_id)

    def resume_instance(self, ctx: RequestContext, instance_id: str) -> None:
        self._act(ctx, states.ACTIONS["resume"], instance_id)

    def get_console_output(self, ctx: RequestContext, instance_id: str, max_bytes: int = 65536) -> str:
        """The tail of the guest's serial console. Raises GuestNotFound."""
        return self.driver.get_console_output(instance_id, max_bytes=max_bytes)

    def get_diagnostics(self, ctx: RequestContext, instance_id: str) -> dict[str, Any]:
        """The guest's counters (``server show --diagnostics``). Raises GuestNotFound, NotSupported."""
        return self.driver.get_diagnostics(instance_id)

    def get_available_resource(self, ctx: RequestContext) -> dict[str, Any]:
        return self.driver.get_available_resource().to_dict()

    def reconcile_servers(self, ctx: RequestContext, fixes: dict[str, bool] | None = None) -> dict[str, Any]:
        """This host's server drift (:mod:`fabric.reconcile.servers`), repairing the kinds
        ``fixes`` names (a :class:`~fabric.reconcile.Fixes` dict; none: report only).
        Returns ``{"host", "findings"}``. Raises Invalid for a bad ``fixes``."""
        wanted = Fixes.from_dict(fixes)
        findings = server_drift.find(self.db, self.driver, self.host)
        if wanted:
            server_drift.fix(self.db, self.driver, self.host, findings, wanted,
                             self.compute_settings.guest_shutdown_timeout)
        return drift_report(self.host, findings)

    # --- periodic tasks ------------------------------------------------------------

    @periodic.periodic_task(lambda self: self.settings.compute.resource_report_interval, run_immediately=True)
    def report_resources(self, ctx: RequestContext) -> dict:
        """This host's capacity into compute_nodes; returns what was written."""
        return housekeeping.report_resources(self.db, self.driver, self.host,
                                             self.compute_settings.availability_zone)

    @periodic.periodic_task(lambda self: self.settings.compute.power_sync_interval)
    def sync_power_states(self, ctx: RequestContext) -> int:
        """Power states from the hypervisor; returns the number of instances changed."""
        return housekeeping.sync_power_states(self.db, self.driver, self.host)

    @periodic.periodic_task(lambda self: self.settings.compute.drift_report_interval)
    def report_server_drift(self, ctx: RequestContext) -> int:
        """Log this host's server drift, one line per finding (fixes nothing); returns how many."""
        findings = server_drift.find(self.db, self.driver, self.host)
        log_findings(LOG, "servers", self.host, findings)
        return len(findings)

    @periodic.periodic_task(lambda self: self.settings.compute.reap_interval)
    def reap_stuck_instances(self, ctx: RequestContext) -> list[str]:
        """Stalled tasks to error; returns the instances reaped."""
        return housekeeping.reap_stuck_instances(self.db, self.host, self.compute_settings.transient_timeout)


def _instance_gone_or_deleting(db: Database, instance_id: str) -> bool:
    try:
        return states.get_instance(db, instance_id)["task_state"] == states.DELETING
    except NotFound:
        return True
