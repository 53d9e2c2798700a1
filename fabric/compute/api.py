"""What other services use to act on servers: state checks and intent, then a cast to the host.

The HTTP API (``fabric.api.compute``) calls this for every server action,
delete and console read; nothing else moves a server out of its resting
state from outside the compute worker. Each action moves the instance's
task_state by compare-and-swap from the states :data:`states.ACTIONS` allows
(so two requests cannot both start, and the caller gets
InstanceStateConflict at once) and stages its cast to the worker on the
instance's host in the same transaction (:mod:`fabric.rpc.outbox`: a crash
after the commit cannot lose it), then sends it; if no worker consumes the
host's queue, the task is put back and Unroutable raised.

Callers check that the caller may see the server first (this module knows
nothing of tokens). A locked server (:meth:`ComputeService.lock`) refuses actions and
delete from everyone but admins: the lock is part of each compare-and-swap, so a lock
that lands between the read and the swap still stops the action.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy import orm

from fabric.api import quota
from fabric.compute import instance_actions, migrations, states
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import Image, Instance
from fabric.db.types import utcnow
from fabric.exception import (
    Conflict,
    Forbidden,
    InstanceLocked,
    InstanceStateConflict,
    Invalid,
    NotFound,
    Unroutable,
)
from fabric.rpc.outbox import Outbox

#: The compute RPC method that tears a server down.
TERMINATE = "terminate_instance"


class ComputeCaster(Protocol):
    """How a request reaches the compute worker on a host (``fabric.api.clients.rpc_clients``
    builds it over :mod:`fabric.compute.rpcapi`; the API's unit tests record it instead)."""

    def instance_action(self, ctx: RequestContext, host: str, action: str, instance_id: str,
                        **kwargs: Any) -> None:
        """Cast the compute RPC method ``action`` with ``kwargs`` to ``host``."""

    def get_console_output(self, ctx: RequestContext, host: str, instance_id: str, length: int | None) -> str:
        """Call: the last ``length`` lines of the guest's console (all of it for None)."""

    def get_diagnostics(self, ctx: RequestContext, host: str, instance_id: str) -> dict[str, Any]:
        """Call: the guest's counters from its host's driver."""


def refuse_if_locked(ctx: RequestContext, instance: Any) -> None:
    """Raise InstanceLocked if the instance (a row dict or model) is locked and the caller
    is not an admin: what every change to a server other than lock and unlock checks."""
    locked = instance["locked"] if isinstance(instance, dict) else instance.locked
    if locked and not ctx.is_admin:
        get = instance.get if isinstance(instance, dict) else lambda name: getattr(instance, name)
        reason = get("locked_reason")
        raise InstanceLocked(instance=get("id"), locked_by=get("locked_by") or "owner",
                             reason=f": {reason}" if reason else "")


def action_name(name: str) -> str:
    """The instance action an entry of :data:`states.ACTIONS` records, in Nova's words:
    ``os-stop`` is ``stop``, ``reboot:HARD`` is ``reboot``."""
    return name.split(":")[0].removeprefix("os-")


def _unless_locked(ctx: RequestContext, expected: dict[str, Any]) -> dict[str, Any]:
    """``expected`` for a compare-and-swap, requiring the instance unlocked unless the caller is an admin."""
    return expected if ctx.is_admin else {**expected, "locked": False}


#: Called in the transaction that accepts a delete, with the instance row (e.g. to give quota back).
OnDeleteAccepted = Callable[[orm.Session, Instance], None]


class ComputeService:
    """Server actions, delete and console output over ``db`` and ``compute`` (see :class:`ComputeCaster`)."""

    def __init__(self, db: Database, compute: ComputeCaster, *, outbox: Outbox | None = None,
                 max_retries: int = 5) -> None:
        """``outbox``: the API's, whose ``compute`` sender is ``compute`` (default: one of its own)."""
        self.db = db
        self.compute = compute
        self.outbox = outbox or Outbox(db, "api", types.SimpleNamespace(compute=compute))
        self.max_retries = max_retries

    def act(self, ctx: RequestContext, instance_id: str, name: str) -> None:
        """Start the action ``name`` of :data:`states.ACTIONS` on the instance, then cast it to its host.

        Raises NotFound; InstanceStateConflict naming the state the instance
        is in and the states the action needs; Conflict when it has no host
        yet; Unroutable when no worker serves the host, with the instance as
        it was. A cast the broker does not confirm yet is sent by the outbox's relay.
        """
        action = states.ACTIONS[name]
        self._begin(ctx, instance_id, vm_states=action.vm_states, task_states=action.task_states, task=action.task,
                    action=action_name(name), rpc_method=action.rpc_method, **action.rpc_kwargs)

    # --- rebuild, snapshot, resize and migrate (the worker's side: fabric.compute.moves) ---------

    def _begin(self, ctx: RequestContext, instance_id: str, *, vm_states: tuple[str, ...], task: str, action: str,
               rpc_method: str, task_states: tuple[str | None, ...] = (None,), values: dict[str, Any] | None = None,
               during: Callable | None = None, undo: Callable | None = None, host_of: Callable | None = None,
               **rpc_kwargs: Any) -> dict[str, Any]:
        """Start an action or a move: the compare-and-swap from (``vm_states``, ``task_states``) to ``task``
        (with ``values``), ``during(session, row)`` (its result joins the cast's keyword
        arguments), the instance action and the staged cast of ``rpc_method`` to the host
        (``host_of(row, extra)``, else the server's), all in one transaction; then the send.

        Returns what ``during`` returned. Raises as :meth:`act` does; on Unroutable the task
        is put back and ``undo(extra)`` runs before it is raised.
        """
        row = states.get_instance(self.db, instance_id)
        refuse_if_locked(ctx, row)
        host, previous = row["host"], row["task_state"]
        if host is None and row["vm_state"] in vm_states and previous in task_states:
            raise Conflict(reason=f"server {instance_id} is not placed on a host yet; {action} needs a built server")
        # The expected host guards against a reschedule between the read and the swap.
        expected = _unless_locked(ctx, {"vm_state": vm_states, "task_state": task_states, "host": host})
        extra: dict[str, Any] = {}
        with self.db.begin() as session:
            staged = None
            if states.swap(session, instance_id, expected, task_state=task, **(values or {})):
                extra = during(session, row) if during is not None else {}
                instance_actions.start(session, ctx, instance_id, action)
                target = host_of(row, extra) if host_of is not None else host
                staged = self.outbox.stage(session, "api.instance_action", ctx, host=target, action=rpc_method,
                                           instance_id=instance_id, **rpc_kwargs, **extra)
        if staged is None:
            now = states.get_instance(self.db, instance_id)  # NotFound
            refuse_if_locked(ctx, now)
            states.require(now, expected)  # InstanceStateConflict
            raise InstanceStateConflict(instance=instance_id, attr="state", actual="changed concurrently",
                                        expected=[f"{k}={v}" for k, v in expected.items()])
        try:
            self.outbox.send(staged)
        except Unroutable:
            try:
                states.compare_and_swap(self.db, instance_id, {"task_state": task}, task_state=previous)
            except (NotFound, InstanceStateConflict):
                pass  # it moved on meanwhile (deleted): nothing of ours to put back
            if undo is not None:
                undo(extra)
            raise
        return extra

    def rebuild(self, ctx: RequestContext, instance_id: str, image_id: str, name: str | None = None,
                key: tuple[str | None, str | None] | None = None, changes: dict[str, Any] | None = None) -> None:
        """Rebuild the server from ``image_id`` (checked by the caller: one its project may boot) on
        its host, addresses kept; ``key`` (name, public key) replaces its key pair; ``changes``
        (instance columns, e.g. metadata_items, checked by the caller) are written with the swap
        that accepts the rebuild. Raises as :meth:`act`; InstanceStateConflict unless active,
        stopped or in error, and then nothing changed."""
        values: dict[str, Any] = {**(changes or {}), "image_id": image_id}
        if name is not None:
            values["display_name"] = name
        if key is not None:
            values["key_name"], values["key_data"] = key
        self._begin(ctx, instance_id, vm_states=states.REBUILD_VM_STATES, task=states.REBUILDING, action="rebuild",
                    rpc_method="rebuild_instance", values=values, image_id=image_id)

    def snapshot(self, ctx: RequestContext, instance_id: str, make_image: Callable[[orm.Session, dict], str]) -> str:
        """Snapshot the server's disk into a new image: ``make_image(session, row)`` writes the queued
        image row (in the accepting transaction) and returns its id, which this returns; the
        worker uploads the data and makes it active. Raises as :meth:`act`."""
        def undo(extra: dict) -> None:
            with self.db.begin() as session:
                session.execute(sa.update(Image).where(Image.id == extra["image_id"]).values(status="killed"))

        extra = self._begin(ctx, instance_id, vm_states=states.SNAPSHOT_VM_STATES, task=states.IMAGE_SNAPSHOT,
                            action="createImage", rpc_method="snapshot_instance",
                            during=lambda session, row: {"image_id": make_image(session, row)}, undo=undo)
        return extra["image_id"]

    def resize(self, ctx: RequestContext, instance_id: str, flavor: dict[str, Any] | None,
               host: str | None = None) -> str:
        """Resize the server to ``flavor`` (``id``, ``vcpus``, ``memory_mb``, ``disk_gb``), or cold-migrate
        it (``flavor`` None; admins only; to ``host`` if given). The scheduler picks and claims the
        destination; the server ends in VERIFY_RESIZE. Returns the migration's id.

        A bigger flavor takes its growth in cores and RAM from the project's quota in the
        transaction that accepts the resize (see :mod:`fabric.compute.migrations` for when it
        is given back). Raises Forbidden (a migration by a non-admin), Invalid (the same
        flavor, a smaller disk, ``host`` the server's own), QuotaExceeded (nothing changed), and
        as :meth:`act` (409 unless active or stopped).
        """
        row = states.get_instance(self.db, instance_id)
        if flavor is None and not ctx.is_admin:
            raise Forbidden(reason="migrating a server is an admin's action")
        if flavor is not None:
            if flavor["id"] == row["flavor_id"]:
                raise Invalid(reason=f"server {instance_id} already has flavor {flavor['id']}; a resize must change "
                                     "the flavor")
            if flavor["disk_gb"] < row["disk_gb"]:
                raise Invalid(reason=f"flavor {flavor['id']} has a {flavor['disk_gb']} GiB disk, smaller than server "
                                     f"{instance_id}'s {row['disk_gb']} GiB; a disk cannot shrink")
        if host is not None and host == row["host"]:
            raise Invalid(reason=f"host {host!r} is server {instance_id}'s own host; migrate it to another")
        if any(vif.get("segment_id") is not None for vif in row.get("network_info") or []):
            raise Conflict(reason=f"server {instance_id} has a NIC on a routed segment, whose addresses belong to "
                                  "their host; it cannot move")
        kind = migrations.RESIZE if flavor is not None else migrations.MIGRATION
        new = dict(flavor) if flavor is not None else migrations.flavor_of(row)
        quota.ensure_usage_rows(self.db, row["project_id"], migrations.quota_of(new))

        def record(session: orm.Session, current: dict) -> dict:
            # The growth is taken with the swap: over quota (QuotaExceeded) rolls both back.
            quota.reserve(session, current["project_id"], migrations.quota_beyond(new, migrations.flavor_of(current)))
            return {"migration_id": migrations.create(session, current, kind, new, host)}

        def undo(extra: dict) -> None:
            with self.db.begin() as session:
                if migrations.advance(session, extra["migration_id"], migrations.PRE_MIGRATING,
                                      status=migrations.FAILED):
                    migrations.give_back_quota(session, row["project_id"],
                                               migrations.quota_beyond(new, migrations.flavor_of(row)))

        extra = self._begin(ctx, instance_id, vm_states=states.MOVE_VM_STATES, task=states.RESIZE_PREP,
                            action=migrations.ACTION_FOR_TYPE[kind], rpc_method="resize_instance",
                            during=record, undo=undo)
        return extra["migration_id"]

    def confirm_resize(self, ctx: RequestContext, instance_id: str) -> None:
        """Confirm a resize or migration (server in VERIFY_RESIZE): its source drops the old guest
        and gives its claim back. Raises as :meth:`act` (409 unless VERIFY_RESIZE)."""
        self._decide(ctx, instance_id, states.RESIZE_CONFIRMING, migrations.CONFIRMING, "confirmResize",
                     "confirm_resize", lambda row, move: move["source_host"])

    def revert_resize(self, ctx: RequestContext, instance_id: str) -> None:
        """Revert a resize or migration (server in VERIFY_RESIZE): back on its source with the old
        flavor, the destination's claim given back. Raises as :meth:`act`."""
        self._decide(ctx, instance_id, states.RESIZE_REVERTING, migrations.REVERTING, "revertResize",
                     "revert_resize", lambda row, move: row["host"])

    def _decide(self, ctx: RequestContext, instance_id: str, task: str, status: str, action: str, rpc_method: str,
                host_of: Callable[[dict, dict], str]) -> None:
        moves: dict[str, dict] = {}

        def record(session: orm.Session, row: dict) -> dict:
            move = migrations.latest(session, instance_id, (migrations.FINISHED,))
            if move is None or not migrations.advance(session, move["id"], migrations.FINISHED, status=status):
                raise InstanceStateConflict(instance=instance_id, attr="migration", actual="none finished",
                                            expected=[migrations.FINISHED])
            moves["move"] = move
            return {"migration_id": move["id"]}

        def undo(extra: dict) -> None:
            with self.db.begin() as session:
                migrations.advance(session, extra["migration_id"], status, status=migrations.FINISHED)

        self._begin(ctx, instance_id, vm_states=(states.RESIZED,), task=task, action=action, rpc_method=rpc_method,
                    during=record, undo=undo, host_of=lambda row, extra: host_of(row, moves["move"]))

    def delete(self, ctx: RequestContext, instance_id: str, on_accepted: OnDeleteAccepted | None = None) -> None:
        """Accept the delete once, from any state: a server on a host goes to task deleting and its
        worker tears it down; one never placed is marked deleted here. A repeat while deleting is
        accepted and does nothing. ``on_accepted`` runs in the accepting transaction.

        Raises NotFound; Conflict if the server kept changing state; Unroutable
        when no worker serves the host (the server stays deleting).
        """
        for _ in range(self.max_retries):
            with self.db.begin() as session:
                row = session.get(Instance, instance_id)
                if row is None or row.deleted:
                    raise NotFound(kind="Instance", ident=instance_id)
                refuse_if_locked(ctx, row)
                if row.task_state == states.DELETING:
                    return
                expected = _unless_locked(ctx, {"vm_state": row.vm_state, "task_state": row.task_state,
                                                "host": row.host})
                if row.host is None:
                    values: dict[str, Any] = {"vm_state": states.DELETED, "task_state": None, "deleted": True,
                                              "terminated_at": utcnow()}
                else:
                    values = {"task_state": states.DELETING}
                if not states.swap(session, instance_id, expected, **values):
                    continue  # it moved under us: look again
                if on_accepted is not None:
                    on_accepted(session, row)
                # A server never placed is deleted here and now; one on a host, by its worker.
                instance_actions.start(session, ctx, instance_id, instance_actions.DELETE,
                                       finished=instance_actions.SUCCESS if row.host is None else None)
                staged = None
                if row.host is not None:
                    staged = self.outbox.stage(session, "api.instance_action", ctx, host=row.host, action=TERMINATE,
                                               instance_id=instance_id)
            if staged is not None:
                self.outbox.send(staged)
            return
        raise Conflict(reason=f"server {instance_id} kept changing state; try the delete again")

    def lock(self, ctx: RequestContext, instance_id: str, reason: str | None = None) -> None:
        """Lock the instance: by "owner" when the caller is of its project, else by "admin".
        Locking a locked server changes nothing (Nova's behaviour). Raises NotFound."""
        with self.db.begin() as session:
            row = session.get(Instance, instance_id, with_for_update=True)
            if row is None or row.deleted:
                raise NotFound(kind="Instance", ident=instance_id)
            if not row.locked:
                row.locked, row.locked_reason = True, reason
                row.locked_by = "owner" if ctx.project_id == row.project_id else "admin"
                instance_actions.start(session, ctx, instance_id, "lock", finished=instance_actions.SUCCESS)

    def unlock(self, ctx: RequestContext, instance_id: str) -> None:
        """Unlock the instance. A lock an admin set only an admin may lift (Forbidden
        otherwise); unlocking an unlocked server changes nothing. Raises NotFound."""
        with self.db.begin() as session:
            row = session.get(Instance, instance_id, with_for_update=True)
            if row is None or row.deleted:
                raise NotFound(kind="Instance", ident=instance_id)
            if row.locked and row.locked_by == "admin" and not ctx.is_admin:
                raise Forbidden(reason=f"server {instance_id} was locked by an admin; only an admin may unlock it")
            if row.locked:
                instance_actions.start(session, ctx, instance_id, "unlock", finished=instance_actions.SUCCESS)
            row.locked, row.locked_by, row.locked_reason = False, None, None

    def get_console_output(self, ctx: RequestContext, instance_id: str, length: int | None = None) -> str:
        """The last ``length`` lines of the server's console (all for None).

        Raises NotFound; InstanceStateConflict unless it is active on a host;
        GuestNotFound from the worker.
        """
        row = states.get_instance(self.db, instance_id)
        states.require(row, {"vm_state": states.CONSOLE_VM_STATES})
        if not row["host"]:
            raise Conflict(reason=f"server {instance_id} is not placed on a host yet; it has no console")
        return self.compute.get_console_output(ctx, host=row["host"], instance_id=instance_id, length=length)
