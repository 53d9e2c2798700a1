"""Server actions: reboot (soft, hard), os-stop, os-start, pause/unpause,
suspend/resume, os-getConsoleOutput, rebuild/resize/migrate/confirmResize/revertResize/createImage
(:mod:`fabric.api.compute.server_moves`), lock/unlock (the server's row only:
:meth:`fabric.compute.api.ComputeService.lock`), and addSecurityGroup/removeSecurityGroup (which
change the groups of the server's ports: fabric.api.security_groups).

The states each action may start from, and what it becomes on the compute
worker, are :data:`fabric.compute.states.ACTIONS`; starting it (compare-and-swap
to its task, committed before the cast to the server's host, put back if the
cast fails) is :meth:`fabric.compute.api.ComputeService.act`. This module reads
the request and checks that the caller may see the server.
"""

from __future__ import annotations

import falcon
from marshmallow import Schema, fields, validate

from fabric import exception
from fabric.api import common, security_groups
from fabric.api.compute import server_moves
from fabric.api.compute.lookup import get_instance
from fabric.api.compute.servers import compute_service
from fabric.compute import states

CONSOLE_ACTION = "os-getConsoleOutput"
#: Actions that only mark the server's row: True locks, False unlocks.
LOCK_ACTIONS = {"lock": True, "unlock": False}
#: Actions on the server's ports' security groups: True adds, False removes.
GROUP_ACTIONS = {"addSecurityGroup": True, "removeSecurityGroup": False}


class RebootSchema(Schema):
    type = fields.String(required=True, validate=validate.OneOf(["SOFT", "HARD", "soft", "hard"]))


class ConsoleSchema(Schema):
    length = fields.Integer(strict=False, allow_none=True, load_default=None, validate=validate.Range(min=-1))


class LockSchema(Schema):
    # Compute 2.73; older clients send {"lock": null}.
    locked_reason = fields.String(load_default=None, validate=validate.Length(max=255))


class GroupSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))


class ServerAction:
    def on_post(self, req, resp, server_id):
        deps, context = common.deps(req), common.ctx(req)
        data = common.read_json(req)
        if not isinstance(data, dict) or len(data) != 1:
            raise exception.Invalid(reason="the action body must name exactly one action, e.g. {\"os-stop\": null}")
        (action, args), = data.items()
        known = {a.split(":")[0] for a in states.ACTIONS} | {CONSOLE_ACTION, *GROUP_ACTIONS, *LOCK_ACTIONS,
                                                             *server_moves.HANDLERS}  # reboot:SOFT: "reboot"
        if action not in known:
            raise exception.Invalid(reason=f"action {action!r} is not supported; supported: "
                                           f"{', '.join(sorted(known))}")
        if action in server_moves.HANDLERS:  # rebuild, resize, migrate, confirm/revert, createImage
            server_moves.HANDLERS[action](req, resp, server_id, args)
            return
        name = action
        if action == "reboot":
            name = f"reboot:{common.load(RebootSchema(), args)['type'].upper()}"
        elif action == CONSOLE_ACTION:
            length = common.load(ConsoleSchema(), args or {})["length"]
        elif action == "lock":
            reason = common.load(LockSchema(), args or {})["locked_reason"]
        with deps.db.begin() as session:
            instance = get_instance(session, context, server_id)  # NotFound unless the caller may see it
        if action in GROUP_ACTIONS:
            group = common.load(GroupSchema(), args)["name"]
            security_groups.change_server_groups(deps, context, instance, group, add=GROUP_ACTIONS[action])
            resp.status = falcon.HTTP_202
            return
        service = compute_service(deps)
        if action in LOCK_ACTIONS:
            if LOCK_ACTIONS[action]:
                service.lock(context, server_id, reason)
            else:
                service.unlock(context, server_id)
            resp.status = falcon.HTTP_202
            return
        if action == CONSOLE_ACTION:
            output = service.get_console_output(context, server_id, None if length in (None, -1) else length)
            common.respond(resp, {"output": output})
            return
        service.act(context, server_id, name)
        resp.status = falcon.HTTP_202


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/servers/{{server_id}}/action", ServerAction())
