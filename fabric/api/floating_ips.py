"""Network v2.0 floating IPs, mounted at ``/networking/v2.0/floatingips``: create from
an external network (``router:external``), list, show, associate with a port or
disassociate (update), delete.

A floating IP's address is an allocation in IPAM's pool of one IPv4 subnet of
the external network, taken (a call to IPAM, idempotent by the request token
``floating:<id>``) before its ``floating_ips`` row is written; a refused
allocation writes nothing. Association writes the port, its fixed address and
its host into the row, then calls that host's network worker, which
translates the address with nftables (the same row is what a worker rebuilds
its NAT from when it starts, :mod:`fabric.network.dbstate`). A worker that
cannot be reached leaves the row as asked and the failure in the log: the
worker converges from the row when it comes back.
"""

from __future__ import annotations

import ipaddress
import logging

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate
from sqlalchemy import exc as sa_exc

from fabric import exception
from fabric.api import common, in_doubt, network_quotas
from fabric.api.network import PREFIX
from fabric.api.network import _owner as owner_of
from fabric.db.models import AddressAllocation, AddressPool, FloatingIp, Network, Port, Subnet
from fabric.db.types import new_uuid
from fabric.network.model import DHCP_PORT_OWNER, floating_request_token

LOG = logging.getLogger(__name__)


class _Loose(Schema):
    class Meta:
        unknown = INCLUDE  # clients send attributes of extensions fabric ignores (dns_name, qos_policy_id)


class FloatingIpCreateSchema(_Loose):
    floating_network_id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    floating_ip_address = fields.IP(load_default=None, allow_none=True)
    subnet_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=36))
    port_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=36))
    fixed_ip_address = fields.IP(load_default=None, allow_none=True)
    description = fields.String(load_default="", validate=validate.Length(max=255))
    project_id = fields.String(load_default=None)
    tenant_id = fields.String(load_default=None)


class FloatingIpUpdateSchema(_Loose):
    port_id = fields.String(allow_none=True, validate=validate.Length(min=1, max=36))
    fixed_ip_address = fields.IP(load_default=None, allow_none=True)
    description = fields.String(validate=validate.Length(max=255))


FLOATING_IP_CREATE = Schema.from_dict({"floatingip": fields.Nested(FloatingIpCreateSchema, required=True)})()
FLOATING_IP_UPDATE = Schema.from_dict({"floatingip": fields.Nested(FloatingIpUpdateSchema, required=True)})()


def floating_ip_document(row: FloatingIp) -> dict:
    return {"id": row.id, "floating_ip_address": row.address, "floating_network_id": row.floating_network_id,
            "port_id": row.port_id, "fixed_ip_address": row.fixed_address, "router_id": None,
            "status": "ACTIVE" if row.port_id else "DOWN", "project_id": row.project_id,
            "tenant_id": row.project_id, "description": "", "tags": [], "port_details": None,
            "port_forwardings": [], "dns_domain": "", "dns_name": "", "qos_policy_id": None,
            "revision_number": 1, "created_at": common.isotime(row.created_at),
            "updated_at": common.isotime(row.updated_at or row.created_at)}


def _external_subnet(session, network_id: str, subnet_id: str | None) -> str:
    """The IPv4 subnet of external network ``network_id`` to take an address from (``subnet_id``
    or the network's first); NotFound or Invalid naming what is wrong."""
    network = session.get(Network, network_id)
    if network is None:
        raise exception.NotFound(kind="Network", ident=network_id)
    if not network.external:
        raise exception.Invalid(reason=f"floatingip.floating_network_id {network_id} is not an external network "
                                       "(router:external); floating IPs come from external networks")
    query = sa.select(Subnet).where(Subnet.network_id == network_id, Subnet.ip_version == 4)
    if subnet_id is not None:
        query = query.where(Subnet.id == subnet_id)
    subnet = session.scalars(query.order_by(Subnet.created_at, Subnet.id).limit(1)).first()
    if subnet is None:
        if subnet_id is not None:
            raise exception.Invalid(reason=f"floatingip.subnet_id {subnet_id} is not an IPv4 subnet of external "
                                           f"network {network_id}")
        raise exception.Invalid(reason=f"external network {network_id} has no IPv4 subnet to take floating "
                                       "addresses from; create one first")
    return subnet.id


def _target(session, context, project_id: str, floating_id: str | None, port_id: str,
            fixed_ip: str | None) -> tuple[str, str]:
    """(fixed address, host) a floating IP of ``project_id`` may be translated to on ``port_id``.

    Raises NotFound for a port the caller cannot see, Invalid for a fixed
    address the port does not hold, Conflict for a port without an IPv4
    address or a host, or one whose address already has a floating IP.
    """
    port = session.get(Port, port_id)
    if port is None or not common.visible(context, port.project_id) or port.device_owner == DHCP_PORT_OWNER:
        raise exception.NotFound(kind="Port", ident=port_id)
    if port.project_id != project_id:
        raise exception.Forbidden(reason=f"port {port_id} belongs to project {port.project_id}, not to the "
                                         f"floating IP's project {project_id}")
    addresses = session.scalars(sa.select(AddressAllocation.address).where(AddressAllocation.port_id == port_id)
                                .order_by(AddressAllocation.id))
    held = [a for a in (a.split("/")[0] for a in addresses) if ipaddress.ip_address(a).version == 4]
    if fixed_ip is not None and fixed_ip not in held:
        raise exception.Invalid(reason=f"floatingip.fixed_ip_address {fixed_ip} is not an address of port "
                                       f"{port_id} (it holds {', '.join(held) or 'none'})")
    if not held:
        raise exception.Conflict(reason=f"port {port_id} has no IPv4 address to translate a floating IP to")
    if not port.host:
        raise exception.Conflict(reason=f"port {port_id} is bound to no host yet; associate the floating IP once "
                                        "its server is running")
    fixed = fixed_ip or held[0]
    taken = session.scalars(sa.select(FloatingIp.address).where(
        FloatingIp.port_id == port_id, FloatingIp.fixed_address == fixed,
        FloatingIp.id != (floating_id or ""))).first()
    if taken is not None:
        raise exception.Conflict(reason=f"fixed address {fixed} of port {port_id} already has floating IP {taken}")
    return fixed, port.host


def _tell_host(deps, context, method: str, host: str, **kwargs) -> None:
    """Call ``host``'s network worker; a failure is logged (the worker converges from the row)."""
    try:
        getattr(deps.clients.network, method)(context, host=host, **kwargs)
    except exception.FabricError as err:
        LOG.warning("Floating IP %s: %s on host %s did not reach its network worker: %s",
                    kwargs.get("address"), method, host, err.message)


def _find(session, context, floating_id: str) -> FloatingIp:
    row = session.get(FloatingIp, floating_id)
    if row is None or not common.visible(context, row.project_id):
        raise exception.NotFound(kind="Floating IP", ident=floating_id)
    return row


_FILTERS = {"id": FloatingIp.id, "floating_ip_address": FloatingIp.address, "port_id": FloatingIp.port_id,
            "floating_network_id": FloatingIp.floating_network_id, "fixed_ip_address": FloatingIp.fixed_address}


class FloatingIps:
    def on_get(self, req, resp):
        context = common.ctx(req)
        query = sa.select(FloatingIp).order_by(FloatingIp.created_at, FloatingIp.id)
        if not context.is_admin:
            query = query.where(FloatingIp.project_id == common.require_project(context))
        query = common.equal_filters(query, req, _FILTERS)
        project = req.get_param("project_id") or req.get_param("tenant_id")
        if project:
            query = query.where(FloatingIp.project_id == project)
        status = req.get_param("status")
        if status:
            query = query.where(FloatingIp.port_id.is_not(None) if status.upper() == "ACTIVE"
                                else FloatingIp.port_id.is_(None))
        with common.deps(req).db.begin() as session:
            common.respond(resp, {"floatingips": [floating_ip_document(r) for r in session.scalars(query)]})

    def on_post(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, FLOATING_IP_CREATE)["floatingip"]
        owner = owner_of(context, data)
        floating_id = new_uuid()
        address = str(data["floating_ip_address"]) if data["floating_ip_address"] is not None else None
        fixed_ip = str(data["fixed_ip_address"]) if data["fixed_ip_address"] is not None else None
        with deps.db.begin() as session:
            subnet_id = _external_subnet(session, data["floating_network_id"], data["subnet_id"])
            if data["port_id"]:
                _target(session, context, owner, None, data["port_id"], fixed_ip)
        token = floating_request_token(floating_id)
        network_quotas.prepare(deps.db, owner, "floatingip")
        with deps.db.begin() as session:
            # Checked before an address is taken (the reservation itself is in the insert, below).
            network_quotas.check(session, owner, "floatingip")
        allocation = deps.clients.network.allocate_floating_address(context, subnet_id=subnet_id,
                                                                    request_token=token, address=address)
        target = None
        try:
            with in_doubt.creating(deps.db, "the create of a floating IP") as session:
                if data["port_id"]:  # checked again: the port may have changed meanwhile
                    target = _target(session, context, owner, floating_id, data["port_id"], fixed_ip)
                network_quotas.take(session, owner, "floatingip")
                row = FloatingIp(id=floating_id, address=allocation["address"], project_id=owner,
                                 floating_network_id=data["floating_network_id"], port_id=data["port_id"],
                                 fixed_address=target[0] if target else None, host=target[1] if target else None)
                session.add(row)
                session.flush()
                doc = floating_ip_document(row)
        except (exception.FabricError, sa_exc.IntegrityError) as err:
            # Nothing half-written: the address goes back to the pool.
            deps.clients.network.release_floating_address(context, subnet_id=subnet_id, request_token=token)
            if isinstance(err, sa_exc.IntegrityError):
                raise exception.Conflict(reason=f"floating address {allocation['address']} is already in use") \
                    from None
            raise
        if target is not None:
            _tell_host(deps, context, "associate_floating", target[1], address=doc["floating_ip_address"],
                       fixed_address=target[0])
        common.respond(resp, {"floatingip": doc}, falcon.HTTP_201)


class FloatingIpItem:
    def on_get(self, req, resp, floating_id):
        with common.deps(req).db.begin() as session:
            common.respond(resp, {"floatingip": floating_ip_document(_find(session, common.ctx(req), floating_id))})

    def on_put(self, req, resp, floating_id):
        """Associate (``port_id``) or disassociate (``port_id: null``); other fields are accepted and ignored."""
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, FLOATING_IP_UPDATE)["floatingip"]
        fixed_ip = str(data["fixed_ip_address"]) if data.get("fixed_ip_address") is not None else None
        target = None
        with deps.db.begin() as session:
            row = _find(session, context, floating_id)
            before = (row.host, row.fixed_address)
            if "port_id" in data:
                if data["port_id"] is not None:
                    target = _target(session, context, row.project_id, row.id, data["port_id"], fixed_ip)
                row.port_id = data["port_id"]
                row.fixed_address, row.host = target if target else (None, None)
            session.flush()
            doc = floating_ip_document(row)
        address = doc["floating_ip_address"]
        old_host, old_fixed = before
        if old_host and (target is None or target[1] != old_host) and "port_id" in data:
            _tell_host(deps, context, "disassociate_floating", old_host, address=address)
        if target is not None and (target[1], target[0]) != (old_host, old_fixed):
            _tell_host(deps, context, "associate_floating", target[1], address=address, fixed_address=target[0])
        common.respond(resp, {"floatingip": doc})

    def on_delete(self, req, resp, floating_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            row = _find(session, context, floating_id)
            address, host = row.address, row.host
            network_quotas.give_back(session, row.project_id, "floatingip")
            pool = session.scalar(sa.select(AddressPool.subnet_id).join(
                AddressAllocation, AddressAllocation.pool_id == AddressPool.id).where(
                AddressAllocation.request_token == floating_request_token(floating_id)))
            session.delete(row)
        # The row is gone first, so a worker rebuilding its NAT now leaves the address out.
        if host:
            _tell_host(deps, context, "disassociate_floating", host, address=address)
        if pool is not None:
            try:
                deps.clients.network.release_floating_address(context, subnet_id=pool,
                                                              request_token=floating_request_token(floating_id))
            except exception.FabricError as err:
                # Held for no port, it is an orphan the address reconciler finds and frees.
                LOG.warning("Floating IP %s deleted, but IPAM did not release %s: %s", floating_id, address,
                            err.message)
        resp.status = falcon.HTTP_204


def register(app: falcon.App) -> None:
    app.add_route(f"{PREFIX}/floatingips", FloatingIps())
    app.add_route(f"{PREFIX}/floatingips/{{floating_id}}", FloatingIpItem())
