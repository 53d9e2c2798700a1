"""os-instance-actions (``openstack server event list`` and ``server event show``): the
actions of a server the caller may see, newest first, with the compute worker's part of
each as its one event (fabric.compute.instance_actions records them). The events are shown
to admins, and from microversion 2.51 to everyone (without the traceback)."""

from __future__ import annotations

import falcon
import sqlalchemy as sa

from fabric import exception
from fabric.api import common
from fabric.api.compute import microversion
from fabric.api.compute.lookup import get_instance
from fabric.db.models import InstanceAction


def _action_document(action: InstanceAction, instance_id: str) -> dict:
    return {"action": action.action, "instance_uuid": instance_id, "request_id": action.request_id,
            "user_id": action.user_id, "project_id": action.project_id,
            "start_time": common.isotime(action.start_time, micro=True), "message": action.message}


class ServerEvents:
    def on_get(self, req, resp, server_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            get_instance(session, context, server_id)  # NotFound unless the caller may see it
            actions = session.scalars(sa.select(InstanceAction).where(InstanceAction.instance_id == server_id)
                                      .order_by(InstanceAction.start_time.desc(), InstanceAction.id.desc())).all()
            docs = [_action_document(a, server_id) for a in actions]
        common.respond(resp, {"instanceActions": docs})


class ServerEvent:
    def on_get(self, req, resp, server_id, request_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            get_instance(session, context, server_id)
            action = session.scalar(sa.select(InstanceAction).where(
                InstanceAction.instance_id == server_id, InstanceAction.request_id == request_id))
            if action is None:
                raise exception.NotFound(kind="Action of request", ident=request_id)
            doc = _action_document(action, server_id)
            if not (context.is_admin or microversion.at_least(req, microversion.ACTION_EVENTS)):
                common.respond(resp, {"instanceAction": doc})  # before 2.51 events are an admin's
                return
            doc["events"] = [{"event": f"compute_{action.action}",
                              "start_time": common.isotime(action.start_time, micro=True),
                              "finish_time": common.isotime(action.finish_time, micro=True),
                              "result": action.result}]
            if context.is_admin:  # Nova shows the traceback to admins only
                doc["events"][0]["traceback"] = action.message
        common.respond(resp, {"instanceAction": doc})


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/servers/{{server_id}}/os-instance-actions", ServerEvents())
    app.add_route(f"{prefix}/servers/{{server_id}}/os-instance-actions/{{request_id}}", ServerEvent())
