"""Network v2.0 ports, mounted at ``/networking/v2.0/ports``: create, list, show, set,
delete, and :func:`nic_request`, how ``server create --nic port-id=`` boots on one.

A port the user creates is a ``ports`` row with no device; its addresses are IPAM
allocations linked to it, one per subnet, held under :func:`port_request_token`
(requested through the same IPAM call every address comes from, never allocated
here). The row and its quota are committed first, then the addresses are taken; a
refused address undoes the row, so nothing is left half-made.

A server booted on the port binds it (compute sets device, owner and host) and asks
IPAM for the port's own address, which IPAM answers with the allocation the port
holds; deleting the server unbinds the port and leaves its address with it, as
Neutron does. A bound port, or one a router or DHCP owns, is not deleted (409).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import random
import re

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate
from sqlalchemy import exc as sa_exc

from fabric import exception
from fabric.api import common, in_doubt, network_quotas, neutron_fields, security_groups
from fabric.api.network import PREFIX, _owner, _scoped, find_network, fixed_ips_of, port_document
from fabric.db.models import AddressAllocation, AddressPool, Network, Port, PortSecurityGroup, Subnet
from fabric.db.types import new_uuid
from fabric.network import ipv6, secgroups_db
from fabric.network.model import COMPUTE_PORT_OWNER_PREFIX, DHCP_PORT_OWNER, port_request_token

LOG = logging.getLogger(__name__)

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class _Loose(Schema):
    class Meta:
        unknown = INCLUDE  # clients send attributes of extensions fabric ignores (binding:*, dns_name)


class FixedIpSchema(Schema):
    subnet_id = fields.String(validate=validate.Length(min=1, max=36))
    ip_address = fields.IP()


class PortCreateSchema(_Loose):
    network_id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    name = fields.String(load_default="", validate=validate.Length(max=255))
    description = fields.String(load_default="", validate=validate.Length(max=255))
    admin_state_up = fields.Boolean(load_default=True)
    mac_address = fields.String(load_default=None, allow_none=True)
    fixed_ips = fields.List(fields.Nested(FixedIpSchema), load_default=None, allow_none=True,
                            validate=validate.Length(max=16))
    security_groups = fields.List(fields.String(validate=validate.Length(min=1, max=255)), load_default=None,
                                  allow_none=True)
    project_id = fields.String(load_default=None)
    tenant_id = fields.String(load_default=None)


class PortUpdateSchema(Schema):
    """What ``port set`` may change; anything else is refused naming it."""

    name = fields.String(validate=validate.Length(max=255))
    description = fields.String(validate=validate.Length(max=255))
    admin_state_up = fields.Boolean()
    fixed_ips = fields.List(fields.Nested(FixedIpSchema), validate=validate.Length(max=16))
    security_groups = fields.List(fields.String(validate=validate.Length(min=1, max=255)))


PORT_CREATE = Schema.from_dict({"port": fields.Nested(PortCreateSchema, required=True)})()
PORT_UPDATE = Schema.from_dict({"port": fields.Nested(PortUpdateSchema, required=True)})()
PORTS_CREATE = Schema.from_dict({"ports": fields.List(fields.Nested(PortCreateSchema), required=True,
                                                      validate=validate.Length(min=1, max=100))})()


@dataclasses.dataclass(frozen=True)
class WantedAddress:
    """One fixed IP a port is to hold: a subnet, and the address or None for any."""

    subnet_id: str
    address: str | None


def normalise_mac(value: str | None) -> str:
    """``value`` as lower-case colon-separated unicast MAC, or a new random one (Neutron's
    fa:16:3e prefix) when None; Invalid naming a bad one."""
    if value is None:
        return "fa:16:3e:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.match(mac) or int(mac[:2], 16) & 1 or mac == "00:00:00:00:00:00":
        raise exception.Invalid(reason=f"port.mac_address {value!r} is not a unicast MAC address "
                                       "(six hex pairs, e.g. fa:16:3e:12:34:56)")
    return mac


def plan_addresses(session, network_id: str, requested: list[dict] | None) -> list[WantedAddress]:
    """The fixed IPs a port of ``network_id`` is to hold.

    ``None`` (not given): one address of the network's first IPv4 subnet and one of its first
    DHCPv6-stateful subnet, for each it has. Otherwise each entry names a subnet of the network
    and/or an address inside one; at most one per subnet. A SLAAC subnet is never named: a
    port's address there is derived from its MAC (:func:`fabric.network.ipv6.slaac_address`),
    not allocated. Raises Invalid naming the bad entry.
    """
    subnets = list(session.scalars(sa.select(Subnet).where(Subnet.network_id == network_id)
                                   .order_by(Subnet.created_at, Subnet.id)))
    if requested is None:
        return [WantedAddress(s.id, None) for s in ipv6.allocated_subnets(subnets)]
    by_id = {s.id: s for s in subnets}
    plan: list[WantedAddress] = []
    for index, entry in enumerate(requested):
        what = f"port.fixed_ips[{index}]"
        address = str(entry["ip_address"]) if entry.get("ip_address") is not None else None
        subnet_id = entry.get("subnet_id")
        if subnet_id is None and address is None:
            raise exception.Invalid(reason=f"{what} names neither subnet_id nor ip_address")
        if subnet_id is not None and subnet_id not in by_id:
            raise exception.Invalid(reason=f"{what}.subnet_id {subnet_id} is not a subnet of network {network_id}")
        if address is not None:
            inside = [s.id for s in subnets if ipaddress.ip_address(address) in ipaddress.ip_network(s.cidr)]
            if subnet_id is None and not inside:
                raise exception.Invalid(reason=f"{what}.ip_address {address} is in no subnet of network {network_id}")
            if subnet_id is not None and subnet_id not in inside:
                raise exception.Invalid(reason=f"{what}.ip_address {address} is not inside subnet {subnet_id} "
                                               f"({by_id[subnet_id].cidr})")
            subnet_id = subnet_id or inside[0]
        mode = ipv6.served_mode(by_id[subnet_id].ipv6_address_mode, by_id[subnet_id].ipv6_ra_mode)
        if mode in ipv6.AUTO_ADDRESS:
            raise exception.Invalid(reason=f"{what}: subnet {subnet_id} is {mode}: a port's address there is the "
                                           "EUI-64 of its MAC, never allocated; name only subnets of other modes")
        if any(w.subnet_id == subnet_id for w in plan):
            raise exception.Invalid(reason=f"{what}: a port holds one address per subnet in fabric, and subnet "
                                           f"{subnet_id} is named twice")
        plan.append(WantedAddress(subnet_id, address))
    return plan


def held_addresses(session, port_id: str) -> dict[str, tuple[str, str]]:
    """The port's IPAM allocations: subnet id -> (address, request token)."""
    rows = session.execute(sa.select(AddressPool.subnet_id, AddressAllocation.address, AddressAllocation.request_token)
                           .join(AddressPool, AddressPool.id == AddressAllocation.pool_id)
                           .where(AddressAllocation.port_id == port_id, AddressPool.subnet_id.is_not(None)))
    return {subnet: (address.split("/")[0], token) for subnet, address, token in rows}


def allocate(deps, context, port_id: str, plan: list[WantedAddress]) -> None:
    """Take the planned addresses for the port from IPAM; on a refusal, give back what this
    call took and raise it (AddressInUse, InvalidAddress, AddressExhausted...)."""
    taken: list[str] = []
    try:
        for wanted in plan:
            token = port_request_token(port_id, wanted.subnet_id)
            deps.clients.network.allocate_port_address(context, subnet_id=wanted.subnet_id, request_token=token,
                                                       address=wanted.address, port_id=port_id)
            taken.append(wanted.subnet_id)
    except exception.FabricError:
        release(deps, context, {s: ("", port_request_token(port_id, s)) for s in taken})
        raise


def release(deps, context, held: dict[str, tuple[str, str]]) -> None:
    """Give addresses back to IPAM (subnet -> (address, token)); a failure is logged: an
    allocation left without its port is an orphan the address reconciler frees."""
    for subnet_id, (address, token) in held.items():
        try:
            deps.clients.network.release_port_address(context, subnet_id=subnet_id, request_token=token)
        except exception.FabricError as err:
            LOG.warning("IPAM did not release %s (%s) of subnet %s: %s", address, token, subnet_id, err.message)


def nic_request(session, context, port_id: str) -> dict:
    """What ``server create --nic port-id=`` asks compute for: the port, bound as it is, and
    the address it holds (so the server keeps it). NotFound for a port the caller cannot
    see, Conflict for one in use by a server or owned by a router or DHCP."""
    port = find(session, context, port_id)
    if port.device_id or port.device_owner:
        raise exception.Conflict(reason=f"port {port.id} is in use by {port.device_owner or 'device'} "
                                        f"{port.device_id or ''}".rstrip())
    held = held_addresses(session, port.id)
    # Its IPv4 address first: compute plugs a guest by that one (IPv6 comes by RA or DHCPv6).
    first = next((s for s in session.scalars(sa.select(Subnet.id).where(Subnet.id.in_(list(held)))
                                             .order_by(Subnet.ip_version, Subnet.created_at, Subnet.id))), None)
    return {"network_id": port.network_id, "port_id": port.id,
            "subnet_id": first, "fixed_ip": held[first][0] if first else None}


def find(session, context, port_id: str) -> Port:
    """The port, if the caller may see it (NotFound otherwise)."""
    port = session.get(Port, port_id)
    if port is None or not common.visible(context, port.project_id):
        raise exception.NotFound(kind="Port", ident=port_id)
    return port


def _usable_network(session, context, owner: str, network_id: str) -> Network:
    """The network a port of project ``owner`` may go on: the caller's own, a shared one, or any
    for an admin; NotFound or Forbidden naming it otherwise."""
    network = find_network(session, context, network_id)
    if network.project_id != owner and not (network.shared or context.is_admin):
        raise exception.Forbidden(reason=f"network {network.id} belongs to another project; ports go on "
                                         "one's own or shared networks")
    return network


def _document(session, context, port: Port) -> dict:
    return port_document(port, fixed_ips_of(session, [port])[port.id], context.is_admin,
                         security_groups.port_groups(session, [port.id])[port.id])


def _owned_elsewhere(port: Port) -> str | None:
    """Why the port's addresses and life are not the user's to change, or None."""
    if port.device_owner == DHCP_PORT_OWNER:
        return "it is a DHCP server's port (fabric's own)"
    if port.device_owner and port.device_owner.startswith("network:"):
        return f"it is owned by router {port.device_id} ({port.device_owner}); use the router commands"
    if port.device_id or (port.device_owner or "").startswith(COMPUTE_PORT_OWNER_PREFIX):
        return f"it is bound to server {port.device_id}; delete the server (or detach the port) first"
    return None


def _fixed_ips_filter(query, req):
    """Neutron's ``fixed_ips=ip_address=A`` / ``fixed_ips=subnet_id=S`` filters."""
    for value in req.get_param_as_list("fixed_ips") or []:
        key, _, wanted = value.partition("=")
        if key not in ("ip_address", "subnet_id") or not wanted:
            raise exception.Invalid(reason=f"fixed_ips filter {value!r}: accepted ip_address=<address> or "
                                           "subnet_id=<id>")
        held = sa.select(AddressAllocation.port_id).join(AddressPool, AddressPool.id == AddressAllocation.pool_id)
        held = held.where(AddressAllocation.address == wanted) if key == "ip_address" else \
            held.where(AddressPool.subnet_id == wanted)
        query = query.where(Port.id.in_(held.where(AddressAllocation.port_id.is_not(None))))
    return query


class Ports:
    def on_get(self, req, resp):
        context = common.ctx(req)
        query = _scoped(sa.select(Port).order_by(Port.created_at, Port.id), Port, context, req)
        for param in ("network_id", "device_id", "device_owner", "mac_address", "status"):
            if req.get_param(param):
                query = query.where(getattr(Port, param).in_(req.get_param_as_list(param)))
        query = _fixed_ips_filter(query, req)
        with common.deps(req).db.begin() as session:
            rows = list(session.scalars(query))
            ips = fixed_ips_of(session, rows)
            groups = security_groups.port_groups(session, [p.id for p in rows])
            docs = [port_document(p, ips[p.id], context.is_admin, groups[p.id]) for p in rows]
        common.respond(resp, {"ports": neutron_fields.select_all(req, docs)})

    def on_post(self, req, resp):
        """One port (``{"port": {...}}``), or several (``{"ports": [...]}``, Neutron's bulk
        create): all or nothing, a refused one undoing those made before it."""
        deps, context = common.deps(req), common.ctx(req)
        raw = common.read_json(req)
        if not (isinstance(raw, dict) and "ports" in raw and "port" not in raw):
            port_id = self._create(deps, context, common.load(PORT_CREATE, raw)["port"])
            with deps.db.begin() as session:
                common.respond(resp, {"port": _document(session, context, session.get(Port, port_id))},
                               falcon.HTTP_201)
            return
        made: list[str] = []
        try:
            for data in common.load(PORTS_CREATE, raw)["ports"]:
                made.append(self._create(deps, context, data))
        except Exception:
            for port_id in reversed(made):
                _undo(deps, context, port_id)
            raise
        with deps.db.begin() as session:
            common.respond(resp, {"ports": [_document(session, context, session.get(Port, p)) for p in made]},
                           falcon.HTTP_201)

    @staticmethod
    def _create(deps, context, data: dict) -> str:
        """Make one port (its row, quota, groups, then its addresses from IPAM); its id.
        A refusal leaves nothing of it."""
        owner = _owner(context, data)
        mac = normalise_mac(data["mac_address"])
        refs = data["security_groups"]
        with deps.db.begin() as session:  # a refusal writes nothing, not even the default group below
            _usable_network(session, context, owner, data["network_id"])
        default_id = secgroups_db.ensure_default_group(deps.db, owner) \
            if refs is None or secgroups_db.DEFAULT_NAME in refs else None
        network_quotas.prepare(deps.db, owner, "port")
        port_id = new_uuid()
        try:
            with in_doubt.creating(deps.db, "the create of a port") as session:
                network = _usable_network(session, context, owner, data["network_id"])
                plan = plan_addresses(session, network.id, data["fixed_ips"])
                groups = secgroups_db.resolve_groups(
                    session, owner, refs if refs is not None else [secgroups_db.DEFAULT_NAME], default_id)
                network_quotas.take(session, owner, "port")
                session.add(Port(id=port_id, network_id=network.id, project_id=owner, name=data["name"],
                                 description=data["description"], admin_state_up=data["admin_state_up"],
                                 mac_address=mac, status="DOWN", binding={}))
                session.flush()
                session.add_all([PortSecurityGroup(port_id=port_id, security_group_id=g) for g in groups])
        except sa_exc.IntegrityError:
            raise exception.Conflict(reason=f"MAC address {mac} is already in use on network "
                                            f"{data['network_id']}") from None
        try:
            allocate(deps, context, port_id, plan)
        except exception.FabricError:
            with deps.db.begin() as session:  # nothing half-made: the row and its quota go
                if session.execute(sa.delete(Port).where(Port.id == port_id)).rowcount:
                    network_quotas.give_back(session, owner, "port")
            raise
        return port_id


def _undo(deps, context, port_id: str) -> None:
    """Take back a port a bulk create made before one of its ports was refused: its row, its
    quota and its addresses."""
    with deps.db.begin() as session:
        port = session.get(Port, port_id)
        if port is None:
            return
        held = held_addresses(session, port_id)
        session.delete(port)
        network_quotas.give_back(session, port.project_id, "port")
    release(deps, context, held)


class PortItem:
    def on_get(self, req, resp, port_id):
        context = common.ctx(req)
        with common.deps(req).db.begin() as session:
            doc = _document(session, context, find(session, context, port_id))
        common.respond(resp, {"port": neutron_fields.select(req, doc)})

    def on_put(self, req, resp, port_id):
        """``port set``: name, description, admin state, security groups; fixed IPs of a port no
        server or router holds (released and allocated through IPAM)."""
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, PORT_UPDATE)["port"]
        with deps.db.begin() as session:
            port = find(session, context, port_id)
            if "fixed_ips" in data:
                why = _owned_elsewhere(port)
                if why:
                    raise exception.Conflict(reason=f"the fixed IPs of port {port_id} cannot change: {why}")
                plan = plan_addresses(session, port.network_id, data["fixed_ips"])
                held = held_addresses(session, port_id)
            for name in ("name", "description", "admin_state_up"):
                if name in data:
                    setattr(port, name, data[name])
        if "security_groups" in data:
            security_groups.set_port_groups(deps, context, port_id, data["security_groups"])
        if "fixed_ips" in data:
            self._change_addresses(deps, context, port_id, plan, held)
        self.on_get(req, resp, port_id)

    @staticmethod
    def _change_addresses(deps, context, port_id: str, plan: list[WantedAddress],
                          held: dict[str, tuple[str, str]]) -> None:
        """Release what the port holds and the plan drops or moves, then take what the plan adds;
        when IPAM refuses an addition, the released addresses are taken back before raising."""
        keep = {w.subnet_id for w in plan if w.subnet_id in held and w.address in (None, held[w.subnet_id][0])}
        drop = {s: v for s, v in held.items() if s not in keep}
        release(deps, context, drop)
        try:
            allocate(deps, context, port_id, [w for w in plan if w.subnet_id not in keep])
        except exception.FabricError:
            allocate(deps, context, port_id, [WantedAddress(s, address) for s, (address, _) in drop.items()])
            raise

    def on_delete(self, req, resp, port_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            port = find(session, context, port_id)
            why = _owned_elsewhere(port)
            if why:
                raise exception.Conflict(reason=f"port {port_id} cannot be deleted: {why}")
            held = held_addresses(session, port_id)
            # Guarded: a server binding the port meanwhile keeps it.
            gone = session.execute(sa.delete(Port).where(Port.id == port_id, Port.device_id.is_(None))
                                   .execution_options(synchronize_session=False)).rowcount
            if gone != 1:
                raise exception.Conflict(reason=f"port {port_id} was bound to a server meanwhile; not deleted")
            network_quotas.give_back(session, port.project_id, "port")
        release(deps, context, held)
        resp.status = falcon.HTTP_204


OPERATIONS = [
    ("get", f"{PREFIX}/ports", "List ports (filters: network_id, device_id, device_owner, mac_address, status, "
     "fixed_ips=ip_address=A|subnet_id=S)", None, 200),
    ("post", f"{PREFIX}/ports", "Create a port (fixed IPs from IPAM, MAC, security groups); {\"ports\": [...]} "
     "creates several, all or nothing", PORT_CREATE, 201),
    ("get", f"{PREFIX}/ports/{{port_id}}", "Show a port", None, 200),
    ("put", f"{PREFIX}/ports/{{port_id}}", "Set a port's name, description, admin state, security groups or "
     "(unbound) fixed IPs", PORT_UPDATE, 200),
    ("delete", f"{PREFIX}/ports/{{port_id}}", "Delete a port (409 while a server or router holds it)", None, 204),
]


def register(app: falcon.App) -> None:
    app.add_route(f"{PREFIX}/ports", Ports())
    app.add_route(f"{PREFIX}/ports/{{port_id}}", PortItem())
