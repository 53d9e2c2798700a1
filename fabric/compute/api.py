"""Compute's own front door: state checks and intent, then a cast to the host.

Each action first moves the instance's task_state by compare-and-swap (so
two requests cannot both start, and the user gets InstanceStateConflict at
once), then casts to the worker on the instance's host; if no worker serves
that host the task is rolled back and the Unroutable error raised.

The HTTP API does not go through here: ``fabric.api.compute`` (actions,
servers) does the same with its own checks and also gives the quota back on
delete, which :meth:`ComputeService.delete` does not. This drives the
workers without the HTTP API (the worker integration tests).
"""

from __future__ import annotations

from typing import Any

from fabric.compute import states
from fabric.compute.manager import action_states
from fabric.compute.rpcapi import ComputeAPI
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.types import utcnow
from fabric.exception import Conflict, InstanceStateConflict, MessagingError


class ComputeService:
    def __init__(self, db: Database, transport: Any) -> None:
        self.db = db
        self.rpcapi = ComputeAPI(transport)

    def _start(self, ctx: RequestContext, action: str, instance_id: str, **kwargs: Any) -> None:
        task, from_states, _method = action_states(action, **kwargs)
        instance = states.compare_and_swap(self.db, instance_id, {"vm_state": from_states, "task_state": None},
                                           task_state=task)
        if not instance["host"]:
            states.compare_and_swap(self.db, instance_id, {"task_state": task}, task_state=None)
            raise Conflict(reason=f"instance {instance_id} has no host yet; {action} needs a built instance")
        try:
            getattr(self.rpcapi, action)(ctx, instance["host"], instance_id, **kwargs)
        except MessagingError:
            states.compare_and_swap(self.db, instance_id, {"task_state": task}, task_state=None)
            raise

    def reboot(self, ctx: RequestContext, instance_id: str, hard: bool = False) -> None:
        self._start(ctx, "reboot_instance", instance_id, hard=hard)

    def stop(self, ctx: RequestContext, instance_id: str) -> None:
        self._start(ctx, "stop_instance", instance_id)

    def start(self, ctx: RequestContext, instance_id: str) -> None:
        self._start(ctx, "start_instance", instance_id)

    def pause(self, ctx: RequestContext, instance_id: str) -> None:
        self._start(ctx, "pause_instance", instance_id)

    def unpause(self, ctx: RequestContext, instance_id: str) -> None:
        self._start(ctx, "unpause_instance", instance_id)

    def suspend(self, ctx: RequestContext, instance_id: str) -> None:
        self._start(ctx, "suspend_instance", instance_id)

    def resume(self, ctx: RequestContext, instance_id: str) -> None:
        self._start(ctx, "resume_instance", instance_id)

    def delete(self, ctx: RequestContext, instance_id: str) -> None:
        """Delete from any state. An instance with no host is marked deleted here;
        otherwise its host's worker tears it down. Raises NotFound."""
        instance = states.get_instance(self.db, instance_id)
        if not instance["host"]:
            try:
                states.compare_and_swap(self.db, instance_id, {"host": None}, vm_state=states.DELETED,
                                        task_state=None, deleted=True, terminated_at=utcnow())
                return
            except InstanceStateConflict:
                instance = states.get_instance(self.db, instance_id)  # placed meanwhile: its host deletes
        states.compare_and_swap(self.db, instance_id, {"host": instance["host"]}, task_state=states.DELETING)
        self.rpcapi.terminate_instance(ctx, instance["host"], instance_id)

    def get_console_output(self, ctx: RequestContext, instance_id: str, max_bytes: int = 65536) -> str:
        instance = states.get_instance(self.db, instance_id)
        if not instance["host"]:
            raise Conflict(reason=f"instance {instance_id} has no host yet; it has no console")
        return self.rpcapi.get_console_output(ctx, instance["host"], instance_id, max_bytes)
