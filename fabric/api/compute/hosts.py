"""os-hypervisors (from compute_nodes), os-services (from the services registry) and the
legacy os-hosts (``openstack host list / show``, Compute up to 2.42: 404 from 2.43), all for
admins.

By microversion: a hypervisor's ``cpu_info`` is a JSON object from 2.28 (a string before);
the hypervisor listing pages from 2.33 (``limit``, ``marker``); from 2.53 hypervisors and
services are named by UUID, the listing takes ``hypervisor_hostname_pattern`` and
``with_servers``, and ``PUT /os-services/{uuid}`` replaces the enable/disable calls. fabric's
rows have integer ids; their UUIDs are derived from what identifies them (a compute node's
host, a service's host and binary: :func:`node_uuid`, :func:`service_uuid`), so they are stable
and need no column.
"""

from __future__ import annotations

import uuid

import falcon
import sqlalchemy as sa
from marshmallow import Schema, fields, validate

from fabric import exception, servicegroup
from fabric.api import common
from fabric.api.compute import microversion
from fabric.db.models import ComputeNode, Instance, Service
from fabric.scheduler import aggregates


def service_state(service: Service | None, down_after: float) -> str:
    """The service's state as os-hypervisors, os-services and fabric's services listing show it:
    "up" or "down" (a compute node with no registered service is down)."""
    return "up" if service is not None and servicegroup.is_up(service, down_time=down_after) else "down"


def _compute_services(session) -> dict[str, Service]:
    return {s.host: s for s in session.scalars(sa.select(Service).where(Service.topic == "compute"))}


#: The namespace of the UUIDs derived for compute nodes and services (2.53).
_UUIDS = uuid.UUID("5b0c2f6e-6d1c-4a53-9c1e-2f4c8d6a7e10")


def node_uuid(node: ComputeNode) -> str:
    """The compute node's UUID from 2.53: derived from its host, so stable for the same host."""
    return str(uuid.uuid5(_UUIDS, f"compute-node/{node.host}"))


def service_uuid(service: Service) -> str:
    """The service's UUID from 2.53: derived from its host and binary (unique together)."""
    return str(uuid.uuid5(_UUIDS, f"service/{service.host}/{service.binary}"))


def find_node(session, req, ident: str) -> ComputeNode:
    """The compute node ``ident`` names: its UUID from 2.53, its integer id before. NotFound otherwise."""
    node = None
    if microversion.at_least(req, microversion.SERVICE_UUIDS):
        node = next((n for n in session.scalars(sa.select(ComputeNode)) if node_uuid(n) == ident), None)
    elif ident.isdigit() and len(ident) < 10:
        node = session.get(ComputeNode, int(ident))
    if node is None:
        raise exception.NotFound(kind="Hypervisor", ident=ident)
    return node


def hypervisor_document(node: ComputeNode, service: Service | None, down_after: float, detail: bool,
                        version: tuple[int, int] = (2, 1)) -> dict:
    """A hypervisor as Nova shows it at ``version``."""
    uuids = version >= microversion.SERVICE_UUIDS
    doc = {"id": node_uuid(node) if uuids else node.id, "hypervisor_hostname": node.host,
           "state": service_state(service, down_after),
           "status": "disabled" if service is not None and service.disabled else "enabled"}
    if detail:
        doc.update({
            "vcpus": node.vcpus, "memory_mb": node.memory_mb, "local_gb": node.disk_gb,
            "vcpus_used": node.vcpus_used, "memory_mb_used": node.memory_mb_used, "local_gb_used": node.disk_gb_used,
            "free_ram_mb": node.memory_mb - node.memory_mb_used, "free_disk_gb": node.disk_gb - node.disk_gb_used,
            "running_vms": node.running_vms, "current_workload": 0, "disk_available_least": node.disk_gb - node.disk_gb_used,
            "hypervisor_type": node.hypervisor_type, "hypervisor_version": 1000,
            "cpu_info": {} if version >= microversion.CPU_INFO_OBJECT else "{}",
            "host_ip": (service.address if service is not None else "") or "",
            "service": {"id": (service_uuid(service) if uuids else service.id) if service else None,
                        "host": node.host,
                        "disabled_reason": service.disabled_reason if service else None},
        })
    return doc


class Hypervisors:
    def _list(self, req, resp, detail: bool):
        deps, version = common.deps(req), microversion.of(req)
        limit, marker, pattern, with_servers = None, None, None, False
        if version >= microversion.HYPERVISOR_PAGES:
            limit, marker = common.int_param(req, "limit", minimum=0), req.get_param("marker")
        if version >= microversion.SERVICE_UUIDS:
            pattern = req.get_param("hypervisor_hostname_pattern")
            with_servers = req.get_param_as_bool("with_servers") or False
            if pattern is not None and (limit is not None or marker is not None):
                raise exception.Invalid(reason="hypervisor_hostname_pattern cannot be paged (limit, marker), "
                                               "as in Nova")
        with deps.db.begin() as session:
            services = _compute_services(session)
            nodes = session.scalars(sa.select(ComputeNode).order_by(ComputeNode.id)).all()
            if pattern is not None:
                nodes = [n for n in nodes if pattern in n.host]
                if not nodes:
                    raise exception.NotFound(kind="Hypervisor matching", ident=repr(pattern))
            if marker is not None:
                ids = [str(node_uuid(n) if version >= microversion.SERVICE_UUIDS else n.id) for n in nodes]
                if marker not in ids:
                    raise exception.Invalid(reason=f"marker {marker!r} is not a hypervisor")
                nodes = nodes[ids.index(marker) + 1:]
            more = limit is not None and len(nodes) > limit
            nodes = nodes[:limit] if limit is not None else nodes
            docs = [hypervisor_document(n, services.get(n.host), deps.settings.service.service_down_time, detail,
                                        version) for n in nodes]
            if with_servers:
                for doc, node in zip(docs, nodes, strict=True):
                    doc["servers"] = _servers_on(session, node.host)
        out: dict = {"hypervisors": docs}
        if more and docs:
            out["hypervisors_links"] = [{"rel": "next", "href": f"{deps.base_url(req)}/compute/v2.1/os-hypervisors"
                                                                f"{'/detail' if detail else ''}?limit={limit}"
                                                                f"&marker={docs[-1]['id']}"}]
        common.respond(resp, out)

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


def _servers_on(session, host: str) -> list[dict]:
    """The servers on ``host`` as a hypervisor's ``servers`` (2.53 ``with_servers``)."""
    return [{"uuid": ident, "name": f"instance-{ident[:8]}"} for ident in session.scalars(
        sa.select(Instance.id).where(Instance.host == host, Instance.deleted.is_(False)).order_by(Instance.id))]


class HypervisorItem:
    def on_get(self, req, resp, hypervisor_id):
        deps, version = common.deps(req), microversion.of(req)
        with deps.db.begin() as session:
            node = find_node(session, req, hypervisor_id)
            service = _compute_services(session).get(node.host)
            doc = hypervisor_document(node, service, deps.settings.service.service_down_time, True, version)
            if version >= microversion.SERVICE_UUIDS and req.get_param_as_bool("with_servers"):
                doc["servers"] = _servers_on(session, node.host)
        common.respond(resp, {"hypervisor": doc})


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


def service_document(service: Service, down_after: float, zones: dict[str, str],
                     version: tuple[int, int] = (2, 1)) -> dict:
    """A service as Nova shows it at ``version`` (its UUID as id from 2.53)."""
    return {"id": service_uuid(service) if version >= microversion.SERVICE_UUIDS else service.id,
            "binary": service.binary, "host": service.host,
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
            docs = [service_document(s, deps.settings.service.service_down_time, zones, microversion.of(req))
                    for s in session.scalars(query)]
        common.respond(resp, {"services": docs})


class ServiceUpdateSchema(Schema):
    status = fields.String(validate=validate.OneOf(["enabled", "disabled"]))
    disabled_reason = fields.String(validate=validate.Length(min=1, max=255))
    forced_down = fields.Boolean()


class ServiceItem:
    """PUT /os-services/{uuid} (2.53): enable or disable a service (with a reason); answers the
    service as the listing shows it."""

    def on_put(self, req, resp, service_id):
        microversion.require(req, microversion.SERVICE_UUIDS, f"PUT /os-services/{service_id}")
        data = common.body(req, ServiceUpdateSchema())
        if not data:
            raise exception.Invalid(reason="the body must give status, disabled_reason or forced_down")
        if "disabled_reason" in data and data.get("status") != "disabled":
            raise exception.Invalid(reason="disabled_reason is only given with status \"disabled\"")
        if data.get("forced_down"):
            raise exception.Invalid(reason="forced_down true is not offered: fabric learns that a service is "
                                           "down from its missed reports")
        deps = common.deps(req)
        with deps.db.begin() as session:
            service = next((s for s in session.scalars(sa.select(Service)) if service_uuid(s) == service_id), None)
            if service is None:
                raise exception.NotFound(kind="Service", ident=service_id)
            if "status" in data:
                service.disabled = data["status"] == "disabled"
                service.disabled_reason = data.get("disabled_reason") if service.disabled else None
            session.flush()
            doc = service_document(service, deps.settings.service.service_down_time, node_zones(session),
                                   microversion.of(req))
        common.respond(resp, {"service": doc})


class ServiceToggle:
    """PUT /os-services/{enable,disable,disable-log-reason} with host and binary."""

    def __init__(self, disable: bool, with_reason: bool) -> None:
        self.disable = disable
        self.with_reason = with_reason

    def on_put(self, req, resp):
        if microversion.at_least(req, microversion.SERVICE_UUIDS):  # Nova reads the name as a service's UUID
            raise exception.Invalid(reason=f"{req.path.rsplit('/', 1)[-1]!r} is not a service UUID; from "
                                           f"microversion 2.53 use PUT /os-services/{{uuid}} with a status")
        data = common.body(req, ServiceToggleSchema())
        if self.with_reason and not data.get("disabled_reason"):
            raise exception.Invalid(reason="disabled_reason is required by disable-log-reason")
        reason = data.get("disabled_reason") if self.disable else None
        with common.deps(req).db.begin() as session:
            changed = session.execute(sa.update(Service).where(
                Service.host == data["host"], Service.binary == data["binary"])
                .values(disabled=self.disable, disabled_reason=reason)).rowcount
            if not changed:  # inside the transaction: the refusal commits nothing, not even a no-op
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
            node = find_node(session, req, hypervisor_id)
        raise falcon.HTTPNotImplemented(description=f"hypervisor {hypervisor_id} ({node.host}): fabric's compute "
                                                    f"drivers do not report host uptime")


class Hosts:
    """GET /os-hosts: every service's host, its topic and zone (Nova's legacy listing)."""

    def on_get(self, req, resp):
        microversion.gone(req, microversion.NO_OS_HOSTS, "os-hosts")
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
        microversion.gone(req, microversion.NO_OS_HOSTS, "os-hosts")
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
    app.add_route(f"{prefix}/os-services/{{service_id}}", ServiceItem())
