"""fabric's own admin endpoints, mounted at ``/fabric/v1`` (admin only):
the topology (datacenter layouts and hosts), tenants and their segments, and
the services registry."""

from __future__ import annotations

import falcon
import sqlalchemy as sa

from fabric.api import common
from fabric.api.compute.hosts import service_state
from fabric.db.models import Datacenter, Segment, Service, Tenant, TopologyHost

PREFIX = "/fabric/v1"


class Topology:
    def on_get(self, req, resp):
        common.require_admin(req, "reading the topology")
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


class Tenants:
    def on_get(self, req, resp):
        common.require_admin(req, "listing tenants")
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
        common.require_admin(req, "listing services")
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


def register(app: falcon.App) -> None:
    app.add_route(f"{PREFIX}/topology", Topology())
    app.add_route(f"{PREFIX}/tenants", Tenants())
    app.add_route(f"{PREFIX}/services", Services())
