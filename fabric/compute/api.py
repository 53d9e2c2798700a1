"""What other services use to act on servers: state checks and intent, then a cast to the host.

The HTTP API (``fabric.api.compute``) calls this for every server action,
delete and console read; nothing else moves a server out of its resting
state from outside the compute worker. Each action moves the instance's
task_state by compare-and-swap from the states :data:`states.ACTIONS` allows
(so two requests cannot both start, and the caller gets
InstanceStateConflict at once), commits, then casts to the worker on the
instance's host; if the cast cannot be sent, the task is put back and the
error raised.

Callers check that the caller may see the server first (this module knows
nothing of projects or tokens).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import orm

from fabric.compute import states
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import Instance
from fabric.db.types import utcnow
from fabric.exception import Conflict, FabricError, InstanceStateConflict, NotFound

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


#: Called in the transaction that accepts a delete, with the instance row (e.g. to give quota back).
OnDeleteAccepted = Callable[[orm.Session, Instance], None]


class ComputeService:
    """Server actions, delete and console output over ``db`` and ``compute`` (see :class:`ComputeCaster`)."""

    def __init__(self, db: Database, compute: ComputeCaster, *, max_retries: int = 5) -> None:
        self.db = db
        self.compute = compute
        self.max_retries = max_retries

    def act(self, ctx: RequestContext, instance_id: str, name: str) -> None:
        """Start the action ``name`` of :data:`states.ACTIONS` on the instance, then cast it to its host.

        Raises NotFound; InstanceStateConflict naming the state the instance
        is in and the states the action needs; Conflict when it has no host
        yet; the caster's error (e.g. Unroutable) when the cast cannot be
        sent, with the instance as it was.
        """
        action = states.ACTIONS[name]
        row = states.get_instance(self.db, instance_id)
        host, previous = row["host"], row["task_state"]
        if host is None and row["vm_state"] in action.vm_states and previous in action.task_states:
            raise Conflict(reason=f"server {instance_id} is not placed on a host yet; {name} needs a built server")
        # The expected host guards against a reschedule between the read and the swap.
        states.compare_and_swap(self.db, instance_id, {"vm_state": action.vm_states, "task_state": action.task_states,
                                                       "host": host}, task_state=action.task)
        try:
            self.compute.instance_action(ctx, host=host, action=action.rpc_method, instance_id=instance_id,
                                         **action.rpc_kwargs)
        except FabricError:
            try:
                states.compare_and_swap(self.db, instance_id, {"task_state": action.task}, task_state=previous)
            except (NotFound, InstanceStateConflict):
                pass  # it moved on meanwhile (deleted): nothing of ours to put back
            raise

    def delete(self, ctx: RequestContext, instance_id: str, on_accepted: OnDeleteAccepted | None = None) -> None:
        """Accept the delete once, from any state: a server on a host goes to task deleting and its
        worker tears it down; one never placed is marked deleted here. A repeat while deleting is
        accepted and does nothing. ``on_accepted`` runs in the accepting transaction.

        Raises NotFound; Conflict if the server kept changing state.
        """
        for _ in range(self.max_retries):
            with self.db.begin() as session:
                row = session.get(Instance, instance_id)
                if row is None or row.deleted:
                    raise NotFound(kind="Instance", ident=instance_id)
                if row.task_state == states.DELETING:
                    return
                expected = {"vm_state": row.vm_state, "task_state": row.task_state, "host": row.host}
                if row.host is None:
                    values: dict[str, Any] = {"vm_state": states.DELETED, "task_state": None, "deleted": True,
                                              "terminated_at": utcnow()}
                else:
                    values = {"task_state": states.DELETING}
                if not states.swap(session, instance_id, expected, **values):
                    continue  # it moved under us: look again
                if on_accepted is not None:
                    on_accepted(session, row)
                host = row.host
            if host is not None:
                self.compute.instance_action(ctx, host=host, action=TERMINATE, instance_id=instance_id)
            return
        raise Conflict(reason=f"server {instance_id} kept changing state; try the delete again")

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
