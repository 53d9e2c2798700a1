"""Server actions: reboot (soft, hard), os-stop, os-start, pause/unpause,
suspend/resume and os-getConsoleOutput.

Each state-changing action is a compare-and-swap on the instance row from
the states it is allowed in to its transient task_state, committed before the
cast to the server's compute host; a failed cast puts the row back.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import Schema, fields, validate

from fabric import exception
from fabric.api import common
from fabric.api.compute.servers import get_instance
from fabric.db.models import Instance
from fabric.db.types import utcnow

_ANY_TASK = object()

#: action -> (allowed vm_states, allowed task_states, new task_state, compute method)
ACTIONS: dict[str, tuple[tuple[str, ...], tuple, str, str]] = {
    "reboot:SOFT": (("active",), (None,), "rebooting", "reboot_instance"),
    "reboot:HARD": (("active", "stopped", "paused", "suspended", "error"),
                    (None, "rebooting", "reboot_pending", "reboot_started"), "rebooting_hard", "reboot_instance"),
    "os-stop": (("active", "error"), (None,), "powering-off", "stop_instance"),
    "os-start": (("stopped",), (None,), "powering-on", "start_instance"),
    "pause": (("active",), (None,), "pausing", "pause_instance"),
    "unpause": (("paused",), (None,), "unpausing", "unpause_instance"),
    "suspend": (("active",), (None,), "suspending", "suspend_instance"),
    "resume": (("suspended",), (None,), "resuming", "resume_instance"),
}


class RebootSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(["SOFT", "HARD", "soft", "hard"]))


class ConsoleSchema(Schema):
    length = fields.Integer(strict=False, allow_none=True, load_default=None, validate=validate.Range(min=-1))


def _task_guard(allowed: tuple):
    clauses = [Instance.task_state.is_(None) if t is None else Instance.task_state == t for t in allowed]
    return sa.or_(*clauses)


def start_action(db, context, server_id: str, name: str) -> tuple[Instance, str]:
    """Move the instance into the action's task_state (CAS); returns (instance, previous task_state).

    Raises NotFound, InstanceStateConflict (409) naming the state it is in and
    the states the action needs, or Conflict when it has no host yet.
    """
    vm_states, task_states, new_task, _ = ACTIONS[name]
    with db.begin() as session:
        instance = get_instance(session, context, server_id)
        if instance.vm_state not in vm_states:
            raise exception.InstanceStateConflict(instance=server_id, attr="vm_state", actual=instance.vm_state,
                                                  expected=", ".join(vm_states))
        if instance.task_state not in task_states:
            raise exception.InstanceStateConflict(instance=server_id, attr="task_state",
                                                  actual=instance.task_state,
                                                  expected=", ".join(str(t) for t in task_states))
        if not instance.host:
            raise exception.Conflict(reason=f"server {server_id} is not placed on a host yet")
        previous = instance.task_state
        changed = session.execute(sa.update(Instance).where(
            Instance.id == server_id, Instance.deleted.is_(False), Instance.vm_state.in_(vm_states),
            _task_guard(task_states)).values(task_state=new_task, task_started_at=utcnow())).rowcount
        if changed != 1:
            current = session.get(Instance, server_id)
            session.refresh(current)
            raise exception.InstanceStateConflict(instance=server_id, attr="task_state",
                                                  actual=current.task_state,
                                                  expected=", ".join(str(t) for t in task_states))
        return instance, previous


def _undo(db, server_id: str, new_task: str, previous: str | None) -> None:
    with db.begin() as session:
        session.execute(sa.update(Instance).where(Instance.id == server_id, Instance.task_state == new_task)
                        .values(task_state=previous))


class ServerAction:
    def on_post(self, req, resp, server_id):
        deps, context = common.deps(req), common.ctx(req)
        data = common.read_json(req)
        if not isinstance(data, dict) or len(data) != 1:
            raise exception.Invalid(reason="the action body must name exactly one action, e.g. {\"os-stop\": null}")
        (action, args), = data.items()
        if action == "os-getConsoleOutput":
            length = common.load(ConsoleSchema(), args or {})["length"]
            with deps.db.begin() as session:
                instance = get_instance(session, context, server_id)
                if instance.vm_state != "active" or not instance.host:
                    raise exception.InstanceStateConflict(instance=server_id, attr="vm_state",
                                                          actual=instance.vm_state, expected="active")
                host = instance.host
            output = deps.clients.compute.get_console_output(context, host=host, instance_id=server_id,
                                                             length=None if length in (None, -1) else length)
            common.respond(resp, {"output": output})
            return
        extra: dict = {}
        name = action
        if action == "reboot":
            reboot_type = common.load(RebootSchema(), args)["type"].upper()
            name, extra = f"reboot:{reboot_type}", {"hard": reboot_type == "HARD"}
        if name not in ACTIONS:
            known = sorted({a.split(':')[0] for a in ACTIONS} | {"os-getConsoleOutput"})
            raise exception.Invalid(reason=f"action {action!r} is not supported; supported: {', '.join(known)}")
        instance, previous = start_action(deps.db, context, server_id, name)
        _, _, new_task, method = ACTIONS[name]
        try:
            deps.clients.compute.instance_action(context, host=instance.host, action=method,
                                                 instance_id=server_id, **extra)
        except exception.FabricError:
            _undo(deps.db, server_id, new_task, previous)
            raise
        resp.status = falcon.HTTP_202


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/servers/{{server_id}}/action", ServerAction())
