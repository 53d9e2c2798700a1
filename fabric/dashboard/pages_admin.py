"""Operator pages (the admin role): hypervisors, the services registry, the
broker's queues, and the topology picture."""

from __future__ import annotations

from urllib.parse import quote

import falcon

from fabric.dashboard import topology
from fabric.dashboard.client import ApiError
from fabric.dashboard.web import field, flash, redirect, render, session


class AdminPage:
    admin_only = True


class Hypervisors(AdminPage):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        hypervisors = session(req).client().get("compute", "/os-hypervisors/detail")["hypervisors"]
        render(req, resp, "hypervisors.html", hypervisors=hypervisors)


class Services(AdminPage):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        services = session(req).client().get("admin", "/services")["services"]
        render(req, resp, "services.html", services=services)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Disable (with a reason) or enable one service, by host and binary."""
        host, binary, action = field(req, "host"), field(req, "binary"), field(req, "action")
        if action not in ("enable", "disable"):
            raise falcon.HTTPBadRequest(description=f"action {action!r} is unknown; use enable or disable")
        body = {"host": host, "binary": binary}
        path = "/os-services/enable"
        if action == "disable":
            reason = field(req, "reason")
            path = "/os-services/disable-log-reason" if reason else "/os-services/disable"
            if reason:
                body["disabled_reason"] = reason
        session(req).client().call("PUT", "compute", path, body=body)
        flash(req, f"{'Disabled' if action == 'disable' else 'Enabled'} {binary} on {host}.")
        redirect("/dashboard/admin/services")


class Queues(AdminPage):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        try:
            listing = session(req).client().get("admin", "/queues")
        except ApiError as err:
            if err.status not in (400, 404, 503):
                raise
            # The embedded memory:// transport has no broker to ask; say so on the page.
            render(req, resp, "queues.html", vhost=None, queues=[], unavailable=err.message)
            return
        render(req, resp, "queues.html", vhost=listing["vhost"], queues=listing["queues"], unavailable=None)

    def on_post_requeue(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        moved = session(req).client().call("POST", "admin", f"/queues/{quote(name, safe='')}/requeue-dead")["moved"]
        flash(req, f"Moved {moved} dead letter(s) back to {name}.")
        redirect("/dashboard/admin/queues")


class Topology(AdminPage):
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        api = session(req).client()
        layout = api.get("admin", "/topology")
        tenants = api.get("admin", "/tenants")["tenants"]
        servers = api.get("compute", "/servers/detail", all_tenants=1)["servers"]
        hypervisors = api.get("compute", "/os-hypervisors")["hypervisors"]
        projects = {p["id"]: p["name"] for p in api.get("identity", "/projects")["projects"]}
        picture = topology.layout(layout, tenants, servers, hypervisors, projects)
        render(req, resp, "topology.html", picture=picture)


def register(app: falcon.App, prefix: str) -> None:
    queues = Queues()
    app.add_route(f"{prefix}/admin/hypervisors", Hypervisors())
    app.add_route(f"{prefix}/admin/services", Services())
    app.add_route(f"{prefix}/admin/queues", queues)
    app.add_route(f"{prefix}/admin/queues/{{name}}/requeue", queues, suffix="requeue")
    app.add_route(f"{prefix}/admin/topology", Topology())
