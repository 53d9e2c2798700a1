"""os-hypervisors (from compute_nodes), os-services (from the services registry) and the
legacy os-hosts (``openstack host list / show``, Compute up to 2.42), all for admins."""

from __future__ import annotations

import falcon
import sqlalchemy as sa
from marshmallow import Schema, fields, validate

from fabric import exception, servicegroup
from fabric.api import common
from fabric.db.models import ComputeNode, Instance, Service
from fabric.scheduler import aggregates


def service_state(service: Service | None, down_after: float) -> str:
    """The service's state as os-hypervisors, os-services and fabric's services listing show it:
    "up" or "down" (a compute node with no registered service is down)."""
    return "up" if service is not None and servicegroup.is_up(service, down_time=down_after) else "down"


def _compute_services(session) -> dict[str, Service]:
    return {s.host: s for s in session.scalars(sa.select(Service).where(Service.topic == "compute"))}


def hypervisor_document(node: ComputeNode, service: Service | None, down_after: float, detail: bool) -> dict:
    doc = {"id": node.id, "hypervisor_hostname": node.host, "state": service_state(service, down_after),
           "status": "disabled" if service is not None and service.disabled else "enabled"}
    if detail:
        doc.update({
            "vcpus": node.vcpus, "memory_mb": node.memory_mb, "local_gb": node.disk_gb,
            "vcpus_used": node.vcpus_used, "memory_mb_used": node.memory_mb_used, "local_gb_used": node.disk_gb_used,
            "free_ram_mb": node.memory_mb - node.memory_mb_used, "free_disk_gb": node.disk_gb - node.disk_gb_used,
            "running_vms": node.running_vms, "current_workload": 0, "disk_available_least": node.disk_gb - node.disk_gb_used,
            "hypervisor_type": node.hypervisor_type, "hypervisor_version": 1000, "cpu_info": "{}",
            "host_ip": (service.address if service is not None else "") or "",
            "service": {"id": service.id if service else None, "host": node.host,
                        "disabled_reason": service.disabled_reason if service else None},
        })
    return doc


class Hypervisors:
    def _list(self, req, resp, detail: bool):
        deps = common.deps(req)
        with deps.db.begin() as session:
            services = _compute_services(session)
            nodes = session.scalars(sa.select(ComputeNode).order_by(ComputeNode.id)).all()
            docs = [hypervisor_document(n, services.get(n.host), deps.settings.service.service_down_time, detail)
                    for n in nodes]
        common.respond(resp, {"hypervisors": docs})

    def on_get(self, req, resp):
        self._list(req, resp, False)

    def on_get_detail(self, req, resp):
        self._list(req, resp, True)

    def on_get_statistics(self, req, resp):
        with common.deps(req).db.begin() as session:
            nodes = session.scalars(sa.select(ComputeNode)).all()
        total = {k: sum(getattr(n, a) for n in nodes) for k, a in (
            ("vcpus", "vcpus"), ("memory_mb", "memory_mb"), ("local_gb", "disk_gb"), ("vcpus_used", "vcpus_used"),
            ("memory_mb_used", "memory_mb_used"), ("local_gb_used", "disk_gb_used"), ("running_vms", "running_vms"))}
        total.update(count=len(nodes), free_ram_mb=total["memory_mb"] - total["memory_mb_used"],
                     free_disk_gb=total["local_gb"] - total["local_gb_used"], current_workload=0,
                     disk_available_least=total["local_gb"] - total["local_gb_used"])
        common.respond(resp, {"hypervisor_statistics": total})


class HypervisorItem:
    def on_get(self, req, resp, hypervisor_id):
        deps = common.deps(req)
        with deps.db.begin() as session:
            node = None
            if hypervisor_id.isdigit():
                node = session.get(ComputeNode, int(hypervisor_id))
            if node is None:
                raise exception.NotFound(kind="Hypervisor", ident=hypervisor_id)
            service = _compute_services(session).get(node.host)
            common.respond(resp, {"hypervisor": hypervisor_document(
                node, service, deps.settings.service.service_down_time, True)})


#: Where Nova lists the services that are not compute hosts.
INTERNAL_ZONE = "internal"


def node_zones(session) -> dict[str, str]:
    """{compute host: its availability zone}: its aggregate's, else its node's
    (fabric.scheduler.aggregates), as the scheduler places by."""
    known = aggregates.read(session)
    zones = {host: known.zone_of(host, zone)
             for host, zone in session.execute(sa.select(ComputeNode.host, ComputeNode.availability_zone))}
    # A compute host in a zoned aggregate before its node first reported.
    return known.zones | zones


def zone_of(service: Service, zones: dict[str, str]) -> str:
    """A service's availability zone: its compute node's, or the internal zone for the rest."""
    return zones.get(service.host, "nova") if service.topic == "compute" else INTERNAL_ZONE


def service_document(service: Service, down_after: float, zones: dict[str, str]) -> dict:
    return {"id": service.id, "binary": service.binary, "host": service.host,
            "zone": zone_of(service, zones),
            "status": "disabled" if service.disabled else "enabled",
            "state": service_state(service, down_after),
            "updated_at": common.isotime(service.last_heartbeat, micro=True),
            "disabled_reason": service.disabled_reason, "forced_down": False}


class ServiceToggleSchema(Schema):
    host = fields.String(required=True, validate=validate.Length(min=1))
    binary = fields.String(required=True, validate=validate.Length(min=1))
    disabled_reason = fields.String(validate=validate.Length(max=255))


class Services:
    def on_get(self, req, resp):
        deps = common.deps(req)
        query = common.equal_filters(sa.select(Service).order_by(Service.id), req,
                                     {"host": Service.host, "binary": Service.binary})
        with deps.db.begin() as session:
            zones = node_zones(session)
            docs = [service_document(s, deps.settings.service.service_down_time, zones)
                    for s in session.scalars(query)]
        common.respond(resp, {"services": docs})


class ServiceToggle:
    """PUT /os-services/{enable,disable,disable-log-reason} with host and binary."""

    def __init__(self, disable: bool, with_reason: bool) -> None:
        self.disable = disable
        self.with_reason = with_reason

    def on_put(self, req, resp):
        data = common.body(req, ServiceToggleSchema())
        if self.with_reason and not data.get("disabled_reason"):
            raise exception.Invalid(reason="disabled_reason is required by disable-log-reason")
        reason = data.get("disabled_reason") if self.disable else None
        with common.deps(req).db.begin() as session:
            changed = session.execute(sa.update(Service).where(
                Service.host == data["host"], Service.binary == data["binary"])
                .values(disabled=self.disable, disabled_reason=reason)).rowcount
        if not changed:
            raise exception.NotFound(kind="Service", ident=f"{data['binary']} on host {data['host']}")
        doc = {"host": data["host"], "binary": data["binary"], "status": "disabled" if self.disable else "enabled"}
        if self.with_reason:
            doc["disabled_reason"] = reason
        common.respond(resp, {"service": doc})


class HypervisorUptime:
    def on_get(self, req, resp, hypervisor_id):
        """Nova answers a driver's uptime here; fabric's drivers do not report one (501, which
        ``openstack hypervisor show`` expects from such drivers)."""
        with common.deps(req).db.begin() as session:
            node = session.get(ComputeNode, int(hypervisor_id)) if hypervisor_id.isdigit() and len(hypervisor_id) < 10 else None
            if node is None:
                raise exception.NotFound(kind="Hypervisor", ident=hypervisor_id)
        raise falcon.HTTPNotImplemented(description=f"hypervisor {hypervisor_id} ({node.host}): fabric's compute "
                                                    f"drivers do not report host uptime")


class Hosts:
    """GET /os-hosts: every service's host, its topic and zone (Nova's legacy listing)."""

    def on_get(self, req, resp):
        query = sa.select(Service).order_by(Service.host, Service.topic)
        zone = req.get_param("zone")
        with common.deps(req).db.begin() as session:
            zones = node_zones(session)
            docs = [{"host_name": s.host, "service": s.topic, "zone": zone_of(s, zones)}
                    for s in session.scalars(query)]
        if zone:
            docs = [d for d in docs if d["zone"] == zone]
        common.respond(resp, {"hosts": docs})


class HostItem:
    """GET /os-hosts/{host}: a compute host's capacity and what its servers use, per project."""

    def on_get(self, req, resp, host_name):
        with common.deps(req).db.begin() as session:
            node = session.scalar(sa.select(ComputeNode).where(ComputeNode.host == host_name))
            if node is None:
                raise exception.NotFound(kind="Compute host", ident=host_name)
            per_project = session.execute(
                sa.select(Instance.project_id, sa.func.sum(Instance.vcpus), sa.func.sum(Instance.memory_mb),
                          sa.func.sum(Instance.disk_gb))
                .where(Instance.host == host_name, Instance.deleted.is_(False))
                .group_by(Instance.project_id).order_by(Instance.project_id)).all()

        def row(project: str, cpu, memory_mb, disk_gb) -> dict:
            return {"resource": {"host": host_name, "project": project, "cpu": int(cpu or 0),
                                 "memory_mb": int(memory_mb or 0), "disk_gb": int(disk_gb or 0)}}

        docs = [row("(total)", node.vcpus, node.memory_mb, node.disk_gb),
                row("(used_now)", node.vcpus_used, node.memory_mb_used, node.disk_gb_used),
                row("(used_max)", *(sum(r[i] or 0 for r in per_project) for i in (1, 2, 3)))]
        docs += [row(*r) for r in per_project]
        common.respond(resp, {"host": docs})


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/os-hosts", Hosts())
    app.add_route(f"{prefix}/os-hosts/{{host_name}}", HostItem())
    app.add_route(f"{prefix}/os-hypervisors/{{hypervisor_id}}/uptime", HypervisorUptime())
    hypervisors = Hypervisors()
    app.add_route(f"{prefix}/os-hypervisors", hypervisors)
    app.add_route(f"{prefix}/os-hypervisors/detail", hypervisors, suffix="detail")
    app.add_route(f"{prefix}/os-hypervisors/statistics", hypervisors, suffix="statistics")
    app.add_route(f"{prefix}/os-hypervisors/{{hypervisor_id}}", HypervisorItem())
    app.add_route(f"{prefix}/os-services", Services())
    app.add_route(f"{prefix}/os-services/enable", ServiceToggle(False, False))
    app.add_route(f"{prefix}/os-services/disable", ServiceToggle(True, False))
    app.add_route(f"{prefix}/os-services/disable-log-reason", ServiceToggle(True, True))
