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

from sqlalchemy import orm

from fabric.compute import instance_actions, states
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import Instance
from fabric.db.types import utcnow
from fabric.exception import Conflict, Forbidden, InstanceLocked, InstanceStateConflict, NotFound, Unroutable
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
        row = states.get_instance(self.db, instance_id)
        refuse_if_locked(ctx, row)
        host, previous = row["host"], row["task_state"]
        if host is None and row["vm_state"] in action.vm_states and previous in action.task_states:
            raise Conflict(reason=f"server {instance_id} is not placed on a host yet; {name} needs a built server")
        # The expected host guards against a reschedule between the read and the swap.
        expected = _unless_locked(ctx, {"vm_state": action.vm_states, "task_state": action.task_states,
                                        "host": host})
        with self.db.begin() as session:
            staged = None
            if states.swap(session, instance_id, expected, task_state=action.task):
                instance_actions.start(session, ctx, instance_id, action_name(name))
                staged = self.outbox.stage(session, "api.instance_action", ctx, host=host, action=action.rpc_method,
                                           instance_id=instance_id, **action.rpc_kwargs)
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
                states.compare_and_swap(self.db, instance_id, {"task_state": action.task}, task_state=previous)
            except (NotFound, InstanceStateConflict):
                pass  # it moved on meanwhile (deleted): nothing of ours to put back
            raise

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
