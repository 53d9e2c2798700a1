"""Network v2.0 subset, mounted at ``/networking/v2.0``: networks (admins may
set the provider type and segmentation id) and subnets (create, show, list, set,
delete). Ports, routers, subnet pools, floating IPs and quotas have modules of
their own (:func:`register` mounts them all).

A network row is committed first (its segmentation id, from the ranges of
:mod:`fabric.network.model`, made unique by the database's constraint), then
the network workers are told by fanout. A subnet is checked by IPAM's own rule
(:func:`fabric.ipam.api.validate_subnet`, run in-process) and stored as IPAM
normalised it, then IPAM is told to prepare its pool: a subnet IPAM would
refuse is a 400 with nothing written.
"""

from __future__ import annotations

import ipaddress
import logging

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate
from sqlalchemy import exc as sa_exc

from fabric import exception
from fabric.api import common, in_doubt, network_quotas, neutron_fields, routed_networks, subnet_pools
from fabric.db.models import AddressAllocation, AddressPool, FloatingIp, Network, Port, RouterInterface, Subnet
from fabric.db.types import new_uuid
from fabric.ipam.api import move_subnet_gateway, validate_subnet
from fabric.network import ipv6
from fabric.network.dbstate import slaac_subnets
from fabric.network.model import (
    DHCP_PORT_OWNER,
    NETWORK_TYPES,
    SEGMENT_RANGES,
    default_mtu,
)

LOG = logging.getLogger(__name__)
PREFIX = "/networking/v2.0"

DEFAULT_NETWORK_TYPE = "vxlan"
#: Tenant networks take VXLAN ids from here up, leaving the low range to admins.
TENANT_VNI_START = 1000


class _Loose(Schema):
    class Meta:
        unknown = INCLUDE  # neutron clients send attributes of extensions fabric ignores


class NetworkCreateSchema(_Loose):
    name = fields.String(load_default="", validate=validate.Length(max=255))
    admin_state_up = fields.Boolean(load_default=True)
    shared = fields.Boolean(load_default=False)
    mtu = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=68, max=9000))
    network_type = fields.String(data_key="provider:network_type", load_default=None,
                                 validate=validate.OneOf(NETWORK_TYPES))
    segmentation_id = fields.Integer(data_key="provider:segmentation_id", load_default=None, allow_none=True)
    physical_network = fields.String(data_key="provider:physical_network", load_default=None, allow_none=True)
    external = fields.Boolean(data_key="router:external", load_default=False)
    description = fields.String(load_default="", validate=validate.Length(max=255))
    project_id = fields.String(load_default=None)
    tenant_id = fields.String(load_default=None)


class PoolSchema(Schema):
    # Text, checked by IPAM's validate_subnet (inside the CIDR, ordered, no overlap).
    start = fields.String(required=True)
    end = fields.String(required=True)


class HostRouteSchema(Schema):
    """One host route: a destination network and the next hop (checked by :func:`_host_routes`)."""

    destination = fields.String(required=True)
    nexthop = fields.String(required=True)


class SubnetCreateSchema(_Loose):
    network_id = fields.String(required=True)
    # Required unless subnetpool_id names the pool to carve it from.
    cidr = fields.String(load_default=None)
    subnetpool_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=36))
    prefixlen = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0, max=128))
    description = fields.String(load_default="", validate=validate.Length(max=255))
    ip_version = fields.Integer(load_default=4, validate=validate.OneOf([4, 6]))
    name = fields.String(load_default="", validate=validate.Length(max=255))
    gateway_ip = fields.String(load_default="auto", allow_none=True)
    allocation_pools = fields.List(fields.Nested(PoolSchema), load_default=None)
    enable_dhcp = fields.Boolean(load_default=True)
    dns_nameservers = fields.List(fields.IP(), load_default=list)
    host_routes = fields.List(fields.Nested(HostRouteSchema), load_default=list)
    # Checked by fabric.network.ipv6.check_modes, which names the accepted values.
    ipv6_address_mode = fields.String(load_default=None, allow_none=True)
    ipv6_ra_mode = fields.String(load_default=None, allow_none=True)
    project_id = fields.String(load_default=None)
    tenant_id = fields.String(load_default=None)


class NetworkUpdateSchema(Schema):
    """What ``network set`` may change; anything else is refused naming it."""

    name = fields.String(validate=validate.Length(max=255))
    description = fields.String(validate=validate.Length(max=255))
    admin_state_up = fields.Boolean()


class SubnetUpdateSchema(Schema):
    """What ``subnet set`` may change. The allocation pools define IPAM's pool, fixed once it
    exists (its ordinals are positions in those ranges): a change is refused with that reason,
    not silently ignored. The gateway may move (checked by IPAM's rule, see
    :func:`fabric.ipam.api.move_subnet_gateway`); null removes it."""

    name = fields.String(validate=validate.Length(max=255))
    description = fields.String(validate=validate.Length(max=255))
    dns_nameservers = fields.List(fields.IP())
    host_routes = fields.List(fields.Nested(HostRouteSchema))
    enable_dhcp = fields.Boolean()
    gateway_ip = fields.Raw(allow_none=True)
    allocation_pools = fields.Raw()


NETWORK_CREATE = Schema.from_dict({"network": fields.Nested(NetworkCreateSchema, required=True)})()
SUBNET_CREATE = Schema.from_dict({"subnet": fields.Nested(SubnetCreateSchema, required=True)})()
NETWORK_UPDATE = Schema.from_dict({"network": fields.Nested(NetworkUpdateSchema, required=True)})()
SUBNET_UPDATE = Schema.from_dict({"subnet": fields.Nested(SubnetUpdateSchema, required=True)})()


def _may_use(context, network) -> bool:
    """Whether the caller may use ``network`` (a row or a record with shared and project_id)."""
    return network.shared or common.visible(context, network.project_id)


def find_network(session, context, network_id: str) -> Network:
    """The network the caller may use (own, shared or admin); NotFound otherwise."""
    network = session.get(Network, network_id)
    if network is None or not _may_use(context, network):
        raise exception.NotFound(kind="Network", ident=network_id)
    return network


#: What usable_network_id reads, built once (a statement built per request costs its cache key).
_NETWORK_ACCESS = sa.select(Network.id, Network.shared, Network.project_id).where(
    Network.id == sa.bindparam("network_id"))


def usable_network_id(session, context, network_id: str) -> str:
    """:func:`find_network`'s answer's id, read without loading the network (a server create's
    NICs: the ORM's load was most of the read's cost); NotFound as it raises."""
    row = session.execute(_NETWORK_ACCESS, {"network_id": network_id}).first()
    if row is None or not _may_use(context, row):
        raise exception.NotFound(kind="Network", ident=network_id)
    return row.id


def find_readable_network(session, context, network_id: str) -> Network:
    """:func:`find_network`, or an external network: every project sees those (to name one as a
    router's gateway or a floating IP's pool), as in Neutron, without putting ports on them."""
    network = session.get(Network, network_id)
    if network is not None and network.external:
        return network
    return find_network(session, context, network_id)


def _owner(context, data: dict) -> str:
    wanted = data.get("project_id") or data.get("tenant_id")
    if wanted and wanted != context.project_id and not context.is_admin:
        raise exception.Forbidden(reason=f"only an admin may create resources for project {wanted}")
    return wanted or common.require_project(context)


def network_document(network: Network, subnet_ids: list[str], is_admin: bool) -> dict:
    doc = {"id": network.id, "name": network.name, "tenant_id": network.project_id,
           "project_id": network.project_id, "status": network.status, "subnets": subnet_ids,
           "shared": network.shared, "admin_state_up": network.admin_state_up, "mtu": network.mtu,
           "router:external": network.external, "availability_zones": ["nova"], "availability_zone_hints": [],
           "port_security_enabled": True, "description": network.description or "", "tags": [],
           "revision_number": 1,
           "ipv4_address_scope": None, "ipv6_address_scope": None, "is_default": False,
           "created_at": common.isotime(network.created_at),
           "updated_at": common.isotime(network.updated_at or network.created_at)}
    if is_admin:
        doc.update({"provider:network_type": network.network_type,
                    "provider:segmentation_id": network.segmentation_id,
                    "provider:physical_network": network.physical_bridge})
    return doc


def subnet_document(subnet: Subnet) -> dict:
    return {"id": subnet.id, "name": subnet.name, "network_id": subnet.network_id, "tenant_id": subnet.project_id,
            "project_id": subnet.project_id, "ip_version": subnet.ip_version, "cidr": subnet.cidr,
            "gateway_ip": subnet.gateway_ip, "allocation_pools": list(subnet.allocation_pools or []),
            "enable_dhcp": subnet.enable_dhcp, "dns_nameservers": list(subnet.dns_nameservers or []),
            "host_routes": list(subnet.host_routes or []), "ipv6_ra_mode": subnet.ipv6_ra_mode, "ipv6_address_mode": subnet.ipv6_address_mode,
            "subnetpool_id": subnet.subnetpool_id, "description": subnet.description or "", "tags": [],
            "service_types": [], "revision_number": 1, "created_at": common.isotime(subnet.created_at),
            "updated_at": common.isotime(subnet.updated_at or subnet.created_at)}


def port_document(port: Port, fixed_ips: list[dict], is_admin: bool, groups: list[str] | None = None) -> dict:
    doc = {"id": port.id, "name": port.name, "network_id": port.network_id, "tenant_id": port.project_id,
           "project_id": port.project_id, "mac_address": port.mac_address, "fixed_ips": fixed_ips,
           "device_id": port.device_id or "", "device_owner": port.device_owner or "", "status": port.status,
           "admin_state_up": port.admin_state_up, "security_groups": groups or [], "allowed_address_pairs": [],
           "description": port.description or "",
           "tags": [], "revision_number": 1, "port_security_enabled": True,
           "created_at": common.isotime(port.created_at), "updated_at": common.isotime(
               port.updated_at or port.created_at)}
    if is_admin:
        doc.update({"binding:host_id": port.host or "", "binding:vif_type": (port.binding or {}).get(
            "vif_type", "unbound"), "binding:vnic_type": "normal", "binding:profile": {}, "binding:vif_details": {}})
    return doc


def _scoped(query, model, context, req):
    """Apply visibility and the common ``id``, ``name`` and project filters. Every project sees
    shared and external networks and their subnets (Neutron's subnet-external-network)."""
    if not context.is_admin:
        owner_clause = model.project_id == context.project_id
        public = (model.shared.is_(True), model.external.is_(True)) if model is Network else (
            model.network_id.in_(sa.select(Network.id).where(sa.or_(Network.shared.is_(True),
                                                                     Network.external.is_(True)))),)
        query = query.where(sa.or_(owner_clause, *public) if model in (Network, Subnet) else owner_clause)
    for param in ("id", "name"):
        values = req.get_param_as_list(param)
        if values:
            query = query.where(getattr(model, param).in_(values))
    project = req.get_param("project_id") or req.get_param("tenant_id")
    if project:
        query = query.where(model.project_id == project)
    return query


def _allocate_segment(db, network_type: str, requested: int | None) -> int | None:
    """The segmentation id for a new network: ``requested`` or the lowest free one
    (the unique constraint settles races: the loser of one id takes the next)."""
    bounds = SEGMENT_RANGES[network_type]
    if bounds is None:
        if requested is not None:
            raise exception.Invalid(reason=f"provider:segmentation_id is not used by {network_type} networks")
        return None
    low, high = bounds
    if requested is not None:
        if not low <= requested <= high:
            raise exception.Invalid(reason=f"provider:segmentation_id {requested} is out of range for "
                                           f"{network_type} ({low}-{high})")
        return requested
    start = max(low, TENANT_VNI_START) if network_type == "vxlan" else low
    with db.begin() as session:
        used = set(session.scalars(sa.select(Network.segmentation_id).where(
            Network.network_type == network_type, Network.segmentation_id >= start)))
    candidate = start
    while candidate in used:
        candidate += 1
    if candidate > high:
        raise exception.Conflict(reason=f"no free {network_type} segmentation id is left ({low}-{high})")
    return candidate


class Networks:
    def on_get(self, req, resp):
        context = common.ctx(req)
        query = _scoped(sa.select(Network).order_by(Network.created_at, Network.id), Network, context, req)
        for param, column in (("shared", Network.shared), ("router:external", Network.external)):
            wanted = req.get_param_as_bool(param)
            if wanted is not None:
                query = query.where(column.is_(wanted))
        with common.deps(req).db.begin() as session:
            rows = list(session.scalars(query))
            subnets = _subnet_ids(session, [r.id for r in rows])
            docs = [network_document(r, subnets.get(r.id, []), context.is_admin) for r in rows]
        common.respond(resp, {"networks": neutron_fields.select_all(req, docs)})

    def on_post(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, NETWORK_CREATE)["network"]
        owner = _owner(context, data)
        network_type = data["network_type"] or DEFAULT_NETWORK_TYPE
        # A routed network's segment is its project's own (fabric.api.routed_networks): members may ask for one.
        provider = [k for k in ("network_type", "segmentation_id", "physical_network") if data.get(k) is not None
                    and not (k == "network_type" and network_type == "routed")]
        if (provider or data["shared"] or data["external"]) and not context.is_admin:
            raise exception.Forbidden(reason="only an admin may set provider:* (but provider:network_type routed), "
                                             "shared or router:external")
        if network_type == "flat" and not data["physical_network"]:
            raise exception.Invalid(reason="a flat network needs provider:physical_network (the bridge it uses)")
        mtu = data["mtu"] or default_mtu(network_type)
        network_id = new_uuid()
        routed = network_type == "routed"
        segment_name = routed_networks.segment_name(data["name"], network_id) if routed else None
        network_quotas.prepare(deps.db, owner, "network")
        for _ in range(deps.settings.database.max_retries):
            segment = _allocate_segment(deps.db, network_type, data["segmentation_id"])
            # Inside the loop: a segment freed by a concurrent delete fails the insert, and is numbered again.
            routed_segment = routed_networks.allocate_segment(deps.clients, context, owner, segment_name) \
                if routed else None
            try:
                with in_doubt.creating(deps.db, "the create of a network") as session:
                    network_quotas.take(session, owner, "network")
                    network = Network(id=network_id, name=data["name"], project_id=owner, network_type=network_type,
                                      segmentation_id=segment, physical_bridge=data["physical_network"],
                                      shared=data["shared"], external=data["external"], mtu=mtu, status="ACTIVE",
                                      segment_id=routed_segment, description=data["description"],
                                      admin_state_up=data["admin_state_up"])
                    session.add(network)
                    session.flush()
                    doc = network_document(network, [], context.is_admin)
                    spec = {"id": network.id, "network_type": network.network_type, "project_id": owner,
                            "segmentation_id": network.segmentation_id, "physical_bridge": network.physical_bridge,
                            "mtu": network.mtu}
                break
            except sa_exc.IntegrityError:
                if data["segmentation_id"] is not None:
                    raise exception.Conflict(reason=f"{network_type} segmentation id {segment} is already in use") \
                        from None
        else:
            raise exception.Conflict(reason=f"could not find a free {network_type} segmentation id; try again")
        try:
            if not routed:  # a host sets a routed network up when it plugs its first guest on it
                deps.clients.network.network_created(context, network=spec)
        except exception.FabricError as err:
            # The row stands: workers pick networks up from the database when they start.
            LOG.warning("Network %s created, but the network workers were not told: %s", doc["id"], err.message)
        common.respond(resp, {"network": doc}, falcon.HTTP_201)


def _subnet_ids(session, network_ids: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if network_ids:
        for net_id, sub_id in session.execute(sa.select(Subnet.network_id, Subnet.id)
                                              .where(Subnet.network_id.in_(network_ids)).order_by(Subnet.created_at)):
            out.setdefault(net_id, []).append(sub_id)
    return out


class NetworkItem:
    def on_get(self, req, resp, network_id):
        context = common.ctx(req)
        with common.deps(req).db.begin() as session:
            network = find_readable_network(session, context, network_id)
            doc = network_document(network, _subnet_ids(session, [network.id]).get(network.id, []), context.is_admin)
        common.respond(resp, {"network": neutron_fields.select(req, doc)})

    def on_put(self, req, resp, network_id):
        """``network set``: name, description, admin state (the owner's or an admin's)."""
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, NETWORK_UPDATE)["network"]
        with deps.db.begin() as session:
            network = find_network(session, context, network_id)
            if not common.visible(context, network.project_id):
                raise exception.Forbidden(reason=f"network {network_id} belongs to another project")
            for name, value in data.items():
                setattr(network, name, value)
            session.flush()
            doc = network_document(network, _subnet_ids(session, [network.id]).get(network.id, []), context.is_admin)
        common.respond(resp, {"network": doc})

    def on_delete(self, req, resp, network_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            network = find_network(session, context, network_id)
            if not common.visible(context, network.project_id):
                raise exception.Forbidden(reason=f"network {network_id} belongs to another project")
            # Every port but the per-host DHCP servers' (fabric's own) holds the network: a
            # server's NIC, a user's port, a router's leg or gateway.
            in_use = session.scalar(sa.select(sa.func.count()).select_from(Port).where(
                Port.network_id == network_id, sa.or_(Port.device_owner.is_(None),
                                                      Port.device_owner != DHCP_PORT_OWNER)))
            if in_use:
                raise exception.Conflict(reason=f"network {network_id} has {in_use} port(s) in use (servers, "
                                                "ports, router interfaces or gateways); delete those first")
            floating = session.scalar(sa.select(sa.func.count()).select_from(FloatingIp).where(
                FloatingIp.floating_network_id == network_id))
            if floating:
                raise exception.Conflict(reason=f"network {network_id} has {floating} floating IP(s); "
                                                "delete those first")
            segment_id = network.segment_id
            segment = routed_networks.segment_of(session, segment_id)
            subnets = session.scalar(sa.select(sa.func.count()).select_from(Subnet)
                                     .where(Subnet.network_id == network_id))
            owner = network.project_id
            session.delete(network)
            network_quotas.give_back(session, owner, "network")
            network_quotas.give_back(session, owner, "subnet", subnets)
        try:
            deps.clients.network.network_deleted(context, network_id=network_id)
        except exception.FabricError as err:
            LOG.warning("Network %s deleted, but the network workers were not told: %s", network_id, err.message)
        if segment is not None:
            routed_networks.release_segment(deps.db, deps.clients, context, segment_id, segment)
        resp.status = falcon.HTTP_204


class Subnets:
    def on_get(self, req, resp):
        context = common.ctx(req)
        query = _scoped(sa.select(Subnet).order_by(Subnet.created_at, Subnet.id), Subnet, context, req)
        if req.get_param("network_id"):
            query = query.where(Subnet.network_id.in_(req.get_param_as_list("network_id")))
        with common.deps(req).db.begin() as session:
            docs = [subnet_document(s) for s in session.scalars(query)]
        common.respond(resp, {"subnets": neutron_fields.select_all(req, docs)})

    def on_post(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, SUBNET_CREATE)["subnet"]
        owner = _owner(context, data)
        if not data["cidr"] and not data["subnetpool_id"]:
            raise exception.Invalid(reason="subnet.cidr is required unless subnet.subnetpool_id names a subnet pool "
                                           "to carve it from")
        if data["cidr"] and not data["subnetpool_id"]:
            # Checked before anything is read: a plain bad CIDR is a 400 at once.
            validate_subnet(data["cidr"], gateway_ip=data["gateway_ip"], allocation_pools=data["allocation_pools"],
                            ip_version=data["ip_version"])
        ipv6.check_modes(data["ip_version"], data["cidr"] if not data["subnetpool_id"] else None,
                         data["ipv6_address_mode"], data["ipv6_ra_mode"], data["enable_dhcp"])
        network_quotas.prepare(deps.db, owner, "subnet")
        for _ in range(deps.settings.database.max_retries):
            try:
                doc = self._insert(deps.db, context, owner, data)
                break
            except subnet_pools.PoolChanged:
                continue  # another subnet was carved from the pool meanwhile: carve again
        else:
            raise exception.Conflict(reason=f"subnet pool {data['subnetpool_id']} kept changing; try again")
        try:
            deps.clients.network.subnet_created(context, subnet_id=doc["id"])
        except exception.FabricError as err:
            LOG.warning("Subnet %s created, but IPAM was not told: %s", doc["id"], err.message)
        common.respond(resp, {"subnet": doc}, falcon.HTTP_201)

    @staticmethod
    def _insert(db, context, owner: str, data: dict) -> dict:
        """Write the subnet (its CIDR carved from the pool when one is named) and take its quota,
        in one transaction; the subnet's document. Raises PoolChanged to be run again."""
        with in_doubt.creating(db, "the create of a subnet") as session:
            network = find_network(session, context, data["network_id"])
            if network.project_id != owner and not context.is_admin:
                raise exception.Forbidden(reason=f"network {network.id} belongs to another project")
            cidr = data["cidr"]
            if data["subnetpool_id"]:
                cidr = subnet_pools.carve_cidr(session, context, data["subnetpool_id"], cidr, data["prefixlen"])
            # IPAM's rule, in-process (it is pure): the subnet stored is exactly the
            # one IPAM will build its pool from, so a subnet IPAM would refuse later
            # is refused here with nothing written.
            spec = validate_subnet(cidr, gateway_ip=data["gateway_ip"], allocation_pools=data["allocation_pools"],
                                   ip_version=data["ip_version"])
            ipv6.check_modes(spec.ip_version, spec.cidr, data["ipv6_address_mode"], data["ipv6_ra_mode"],
                             data["enable_dhcp"])
            net = ipaddress.ip_network(spec.cidr)
            if net.version == 6 and network.network_type == "routed":
                raise exception.Invalid(reason=f"subnet.cidr {net}: routed network {network.id} takes IPv4 subnets "
                                               "only (its addresses come from the datacenter's IPv4 layout)")
            for other in session.scalars(sa.select(Subnet).where(Subnet.network_id == network.id)):
                if ipaddress.ip_network(other.cidr).overlaps(net):
                    raise exception.Invalid(reason=f"subnet.cidr {net} overlaps with another subnet of network "
                                                   f"{network.id}: {other.id} ({other.cidr})")
            network_quotas.take(session, owner, "subnet")
            subnet = Subnet(network_id=network.id, project_id=owner, name=data["name"], ip_version=spec.ip_version,
                            cidr=spec.cidr, gateway_ip=spec.gateway_ip, allocation_pools=spec.allocation_pools,
                            reserved=spec.reserved, enable_dhcp=data["enable_dhcp"], description=data["description"],
                            dns_nameservers=[str(a) for a in data["dns_nameservers"]],
                            subnetpool_id=data["subnetpool_id"] or None,
                            host_routes=_host_routes(data["host_routes"], spec.ip_version),
                            ipv6_address_mode=data["ipv6_address_mode"], ipv6_ra_mode=data["ipv6_ra_mode"])
            session.add(subnet)
            session.flush()
            return subnet_document(subnet)


class SubnetItem:
    def _get(self, session, context, subnet_id) -> Subnet:
        subnet = session.get(Subnet, subnet_id)
        if subnet is None or not common.visible(context, subnet.project_id):
            network = session.get(Network, subnet.network_id) if subnet else None
            if network is None or not (network.shared or network.external):
                raise exception.NotFound(kind="Subnet", ident=subnet_id)
        return subnet

    def on_get(self, req, resp, subnet_id):
        with common.deps(req).db.begin() as session:
            doc = subnet_document(self._get(session, common.ctx(req), subnet_id))
        common.respond(resp, {"subnet": neutron_fields.select(req, doc)})

    def on_put(self, req, resp, subnet_id):
        """``subnet set``: name, description, DNS servers, host routes, DHCP on or off, and the gateway
        (``--gateway``; null: none), all in one transaction, so a refusal writes nothing. The
        allocation pools are IPAM's pool definition, fixed once the pool exists: refused, saying so.
        A moved gateway is told to every ipam worker after the commit (they cache definitions).
        Hosts need not hear of it: the gateway they give guests is their own address on the
        network (per-host gateways, :meth:`fabric.network.drivers.linux.LinuxDriver.gateway_of`),
        and the metadata service reads the subnet's gateway, DNS servers and host routes from the
        database. DHCP turned on or off is told to the hosts (``network_changed``): those carrying
        the network start or stop its DHCP server."""
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, SUBNET_UPDATE)["subnet"]
        for _ in range(deps.settings.database.max_retries):
            try:
                doc, moved, dhcp_changed = self._update(deps.db, context, subnet_id, data)
                break
            except sa_exc.IntegrityError:
                continue  # IPAM stored the subnet's pool meanwhile: move the gateway in that one
        else:
            raise exception.Conflict(reason=f"subnet {subnet_id}'s address pool kept changing; try again")
        if moved:
            try:
                deps.clients.network.subnet_updated(context, subnet_id=subnet_id)
            except exception.FabricError as err:
                # Allocations by name read the stored definition; only the gateway that automatic
                # allocations report may be stale until the workers restart.
                LOG.warning("Subnet %s's gateway moved, but IPAM was not told: %s", subnet_id, err.message)
        if dhcp_changed:
            try:
                deps.clients.network.network_changed(context, network_id=doc["network_id"])
            except exception.FabricError as err:
                # The hosts' periodic drift report names the DHCP server that should (not) run.
                LOG.warning("Subnet %s's DHCP turned %s, but the hosts were not told: %s", subnet_id,
                            "on" if doc["enable_dhcp"] else "off", err.message)
        common.respond(resp, {"subnet": doc})

    def _update(self, db, context, subnet_id: str, data: dict) -> tuple[dict, bool, bool]:
        """Apply ``data`` to the subnet in one transaction: (its document, whether the gateway moved,
        whether DHCP turned on or off)."""
        with db.begin() as session:
            subnet = self._get(session, context, subnet_id)
            if not common.visible(context, subnet.project_id):
                raise exception.Forbidden(reason=f"subnet {subnet_id} belongs to another project")
            if "allocation_pools" in data and data["allocation_pools"] != subnet.allocation_pools:
                raise exception.Invalid(reason=f"subnet allocation_pools cannot change in fabric: IPAM's pool "
                                               f"of subnet {subnet_id} is fixed by them; create a new subnet "
                                               "instead (settable: name, description, dns_nameservers, "
                                               "host_routes, enable_dhcp, gateway_ip)")
            moved = False
            if "gateway_ip" in data and not _same_address(data["gateway_ip"], subnet.gateway_ip):
                _check_gateway_unrouted(session, subnet)
                moved = move_subnet_gateway(session, subnet, data["gateway_ip"])
            for name in ("name", "description"):
                if name in data:
                    setattr(subnet, name, data[name])
            if "dns_nameservers" in data:
                subnet.dns_nameservers = [str(a) for a in data["dns_nameservers"]]
            if "host_routes" in data:
                subnet.host_routes = _host_routes(data["host_routes"], subnet.ip_version)
            dhcp_changed = "enable_dhcp" in data and data["enable_dhcp"] != subnet.enable_dhcp
            if dhcp_changed:
                subnet.enable_dhcp = data["enable_dhcp"]
            session.flush()
            return subnet_document(subnet), moved, dhcp_changed

    def on_delete(self, req, resp, subnet_id):
        context = common.ctx(req)
        with common.deps(req).db.begin() as session:
            subnet = self._get(session, context, subnet_id)
            if not common.visible(context, subnet.project_id):
                raise exception.Forbidden(reason=f"subnet {subnet_id} belongs to another project")
            router = session.scalar(sa.select(RouterInterface.router_id).where(RouterInterface.subnet_id == subnet_id))
            if router is not None:
                raise exception.Conflict(reason=f"subnet {subnet_id} is attached to router {router}; "
                                                "remove it from the router first (router remove subnet)")
            # The per-host DHCP ports' addresses belong to the subnet itself and go
            # with it (through the pool's cascade); any other holder blocks the delete.
            held = session.scalar(
                sa.select(sa.func.count()).select_from(AddressAllocation)
                .join(AddressPool, AddressPool.id == AddressAllocation.pool_id)
                .outerjoin(Port, Port.id == AddressAllocation.port_id)
                .where(AddressPool.subnet_id == subnet_id,
                       sa.or_(Port.id.is_(None), Port.device_owner.is_(None),
                              Port.device_owner != DHCP_PORT_OWNER)))
            if held:
                raise exception.Conflict(reason=f"subnet {subnet_id} still has {held} allocated address(es); "
                                                "delete the servers and ports using them first")
            owner = subnet.project_id
            session.delete(subnet)
            network_quotas.give_back(session, owner, "subnet")
        resp.status = falcon.HTTP_204


def _same_address(given, stored: str | None) -> bool:
    """Whether ``given`` (as a client sent it: clients echo the gateway they were shown) names
    ``stored``; False for what is no address at all (IPAM's rule then names it)."""
    if given is None or stored is None:
        return given is stored
    try:
        return ipaddress.ip_address(given) == ipaddress.ip_address(stored)
    except (TypeError, ValueError):
        return False


def _check_gateway_unrouted(session, subnet: Subnet) -> None:
    """Conflict (Neutron's GatewayIpInUse) while a router's leg holds the subnet's current gateway
    (attached by subnet, it takes the gateway's address): the leg would keep an address that is
    no longer the gateway."""
    if subnet.gateway_ip is None:
        return
    leg = session.scalar(sa.select(RouterInterface.port_id).where(RouterInterface.subnet_id == subnet.id,
                                                                  RouterInterface.ip_address == subnet.gateway_ip))
    if leg is not None:
        raise exception.Conflict(reason=f"Current gateway ip {subnet.gateway_ip} already in use by port {leg}. "
                                        "Unable to update.")


def parse_route(route: dict, field: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                                   ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """A route's (destination network, next-hop address); Invalid naming ``field`` and the route
    when either is not one."""
    try:
        return ipaddress.ip_network(route["destination"], strict=False), ipaddress.ip_address(route["nexthop"])
    except ValueError as err:
        raise exception.Invalid(reason=f"{field} {route}: {err}") from None


def _host_routes(routes: list[dict], ip_version: int) -> list[dict]:
    """``routes`` as stored: each destination a network and each next hop an address of the
    subnet's IP version, normalised; Invalid naming the first bad one."""
    out = []
    for route in routes:
        destination, nexthop = parse_route(route, "subnet.host_routes")
        if destination.version != ip_version or nexthop.version != ip_version:
            raise exception.Invalid(reason=f"subnet.host_routes {route}: not IPv{ip_version}, as the subnet")
        out.append({"destination": str(destination), "nexthop": str(nexthop)})
    return out


def fixed_ips_of(session, ports: list[Port]) -> dict[str, list[dict]]:
    """Each port's fixed IPs: its IPAM allocations, and the gateway address a router's leg holds
    (a subnet's gateway is the subnet's own, never an allocation; a leg attached by port holds
    its allocation, listed once)."""
    out: dict[str, list[dict]] = {p.id: [] for p in ports}
    if ports:
        for port_id, subnet_id, address in session.execute(
                sa.select(AddressAllocation.port_id, AddressPool.subnet_id, AddressAllocation.address)
                .outerjoin(AddressPool, AddressPool.id == AddressAllocation.pool_id)
                .where(AddressAllocation.port_id.in_(list(out))).order_by(AddressAllocation.id)):
            out[port_id].append({"subnet_id": subnet_id, "ip_address": address.split("/")[0]})
        for port_id, subnet_id, address in session.execute(
                sa.select(RouterInterface.port_id, RouterInterface.subnet_id, RouterInterface.ip_address)
                .where(RouterInterface.port_id.in_(list(out)))):
            if {"subnet_id": subnet_id, "ip_address": address} not in out[port_id]:
                out[port_id].append({"subnet_id": subnet_id, "ip_address": address})
        auto = slaac_subnets(session, sorted({p.network_id for p in ports}))
        for port in ports:
            for subnet in auto.get(port.network_id, []):
                out[port.id].append({"subnet_id": subnet.id,
                                     "ip_address": ipv6.slaac_address(subnet.cidr, port.mac_address)})
    return out


class Extensions:
    EXTENSIONS = (("provider", "Provider Network"), ("external-net", "Neutron external network"),
                  ("binding", "Port Binding"), ("security-group", "security-group"), ("router", "Neutron L3 Router"),
                  ("ext-gw-mode", "Neutron L3 Configurable external gateway mode"),
                  ("subnet_allocation", "Subnet Allocation"), ("quotas", "Quota management support"),
                  ("quota_details", "Quota details extension"),
                  ("subnet-external-network", "Subnet External Network"), ("extraroute", "Neutron Extra Route"))

    def on_get(self, req, resp):
        common.respond(resp, {"extensions": [
            {"alias": alias, "name": name, "description": name, "links": [], "updated": "2026-11-01T00:00:00Z"}
            for alias, name in self.EXTENSIONS]})


def register(app: falcon.App) -> None:
    """Mount networks, subnets, subnet pools, extensions and network quotas (ports, routers and
    security groups import this module and are mounted by fabric.api.app beside it)."""
    app.add_route(f"{PREFIX}/networks", Networks())
    app.add_route(f"{PREFIX}/networks/{{network_id}}", NetworkItem())
    app.add_route(f"{PREFIX}/subnets", Subnets())
    app.add_route(f"{PREFIX}/subnets/{{subnet_id}}", SubnetItem())
    app.add_route(f"{PREFIX}/extensions", Extensions())
    subnet_pools.register(app)
    network_quotas.register(app, PREFIX)


OPERATIONS = [
    ("put", f"{PREFIX}/networks/{{network_id}}", "Set a network's name, description or admin state",
     NETWORK_UPDATE, 200),
    ("put", f"{PREFIX}/subnets/{{subnet_id}}", "Set a subnet's name, description, DNS servers, host routes, DHCP "
     "or gateway (409 for a gateway in an allocation pool or in use; the allocation pools are fixed)",
     SUBNET_UPDATE, 200),
    ("delete", f"{PREFIX}/subnets/{{subnet_id}}", "Delete a subnet (409 while addresses or a router use it)", None,
     204),
]
