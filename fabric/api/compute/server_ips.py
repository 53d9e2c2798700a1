"""/servers/{id}/ips: a server's addresses by network (Nova's "ips" resource), the same
``addresses`` its server document carries, for clients that ask for them alone (tempest
records a server's addresses this way before it attaches a volume)."""

from __future__ import annotations

import falcon

from fabric.api import common
from fabric.api.compute import views
from fabric.api.compute.lookup import get_instance


def _addresses(req: falcon.Request, server_id: str) -> dict[str, list]:
    """Network label -> [{version, addr}]: Nova's ips view, without the server document's
    OS-EXT-IPS type and MAC."""
    with common.deps(req).db.begin() as session:
        instance = get_instance(session, common.ctx(req), server_id)
        found = views.addresses_for(session, [instance])[instance.id]
    return {label: [{"version": a["version"], "addr": a["addr"]} for a in addresses]
            for label, addresses in found.items()}


class ServerIps:
    def on_get(self, req, resp, server_id):
        """Every network's addresses of the server: {"addresses": {label: [{version, addr}]}}."""
        common.respond(resp, {"addresses": _addresses(req, server_id)})


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/servers/{{server_id}}/ips", ServerIps())
