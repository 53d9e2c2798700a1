"""fabric's own admin endpoints, mounted at ``/fabric/v1`` (admin only):
the topology (datacenter layouts and hosts), tenants and their segments, the
services registry, and the broker's queues (through :mod:`fabric.rpc.queues`,
as ``fabric-manage queues`` sees them).

Hosts are added to and removed from the topology through IPAM (a call: IPAM
numbers the host, validates it and answers with its block), which then
announces the change to every network worker by fanout.
"""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import Schema, fields, validate

from fabric import exception
from fabric.api import common
from fabric.api.compute.hosts import service_state
from fabric.db.models import Datacenter, Segment, Service, Tenant, TopologyHost
from fabric.ipam.api import DEFAULT_DATACENTER
from fabric.rpc import queues

PREFIX = "/fabric/v1"


class HostCreateSchema(Schema):
    # Only the shape is checked here; IPAM checks the name, the tunnel address and
    # the number against the layout (one home for those rules).
    name = fields.String(required=True, validate=validate.Length(min=1, max=255))
    tunnel_address = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    agent_address = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    number = fields.Integer(load_default=None, allow_none=True, strict=True)
    datacenter = fields.String(load_default=DEFAULT_DATACENTER, validate=validate.Length(min=1, max=64))


HOST_CREATE = Schema.from_dict({"host": fields.Nested(HostCreateSchema, required=True)})()


class Topology:
    def on_get(self, req, resp):
        with common.deps(req).db.begin() as session:
            hosts: dict[int, list] = {}
            for host in session.scalars(sa.select(TopologyHost).order_by(TopologyHost.number)):
                hosts.setdefault(host.datacenter_id, []).append(
                    {"name": host.name, "number": host.number, "tunnel_address": host.tunnel_address,
                     "agent_address": host.agent_address})
            datacenters = [{"id": dc.id, "name": dc.name, "prefix": dc.prefix, "host_bits": dc.host_bits,
                            "tenant_bits": dc.tenant_bits, "segment_bits": dc.segment_bits,
                            "endpoint_bits": dc.endpoint_bits, "hosts": hosts.get(dc.id, [])}
                           for dc in session.scalars(sa.select(Datacenter).order_by(Datacenter.id))]
        common.respond(resp, {"datacenters": datacenters})


class TopologyHosts:
    def on_post(self, req, resp):
        """Add a host (idempotent by name): 201 with its number and block."""
        context = common.ctx(req)
        data = common.body(req, HOST_CREATE)["host"]
        host = common.deps(req).clients.topology.add_host(
            context, name=data["name"], tunnel_address=data["tunnel_address"], agent_address=data["agent_address"],
            number=data["number"], datacenter=data["datacenter"])
        common.respond(resp, {"host": host}, falcon.HTTP_201)


class TopologyHostItem:
    def on_delete(self, req, resp, name):
        """Remove a host holding no addresses: 204; 404 when it is not in the topology."""
        context = common.ctx(req)
        datacenter = req.get_param("datacenter") or DEFAULT_DATACENTER
        result = common.deps(req).clients.topology.remove_host(context, name=name, datacenter=datacenter)
        if not result["removed"]:
            raise exception.NotFound(kind="topology host", ident=f"{name} (datacenter {datacenter})")
        resp.status = falcon.HTTP_204


class Tenants:
    def on_get(self, req, resp):
        with common.deps(req).db.begin() as session:
            segments: dict[int, list] = {}
            for seg in session.scalars(sa.select(Segment).order_by(Segment.number)):
                segments.setdefault(seg.tenant_id, []).append({"name": seg.name, "number": seg.number})
            tenants = [{"id": t.id, "datacenter_id": t.datacenter_id, "project_id": t.project_id,
                        "number": t.number, "segments": segments.get(t.id, [])}
                       for t in session.scalars(sa.select(Tenant).order_by(Tenant.datacenter_id, Tenant.number))]
        common.respond(resp, {"tenants": tenants})


class Services:
    def on_get(self, req, resp):
        deps = common.deps(req)
        down_after = deps.settings.service.service_down_time
        with deps.db.begin() as session:
            services = [{"id": s.id, "host": s.host, "binary": s.binary, "topic": s.topic, "version": s.version,
                         "address": s.address, "capabilities": s.capabilities, "disabled": s.disabled,
                         "disabled_reason": s.disabled_reason, "state": service_state(s, down_after),
                         "last_heartbeat": common.isotime(s.last_heartbeat, micro=True),
                         "report_count": s.report_count}
                        for s in session.scalars(sa.select(Service).order_by(Service.host, Service.binary))]
        common.respond(resp, {"services": services})


class Queues:
    def on_get(self, req, resp):
        """The queues of the API's own vhost: depth, consumers and dead letters (rabbitmqctl)."""
        url = queues.amqp_url(common.deps(req).settings)
        vhost = queues.vhost_of(url)
        rows = queues.list_queues(queues.Rabbitmqctl(), vhost)
        common.respond(resp, {"vhost": vhost, "queues": [row.as_dict() for row in rows]})


class QueueRequeueDead:
    def on_post(self, req, resp, name):
        """Move the dead letters of queue ``name`` (``?limit=N`` at most) back onto it."""
        limit = common.int_param(req, "limit", minimum=0)
        queue = queues.live_queue(name)
        moved = queues.requeue_dead(queues.amqp_url(common.deps(req).settings), queue, limit=limit).moved
        common.respond(resp, {"queue": queue, "moved": moved})


def register(app: falcon.App) -> None:
    app.add_route(f"{PREFIX}/topology", Topology())
    app.add_route(f"{PREFIX}/topology/hosts", TopologyHosts())
    app.add_route(f"{PREFIX}/topology/hosts/{{name}}", TopologyHostItem())
    app.add_route(f"{PREFIX}/tenants", Tenants())
    app.add_route(f"{PREFIX}/services", Services())
    app.add_route(f"{PREFIX}/queues", Queues())
    app.add_route(f"{PREFIX}/queues/{{name}}/requeue-dead", QueueRequeueDead())
