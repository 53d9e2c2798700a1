"""Network v2.0 routers, mounted at ``/networking/v2.0/routers``: create, list, show, set
(name, description, admin state, external gateway), delete (refused while it has
interfaces), and ``add_router_interface`` / ``remove_router_interface`` by subnet or port.

A router's leg on a subnet is a port (``network:router_interface``, device the router)
holding the subnet's gateway address, recorded in ``router_interfaces``; a subnet is
attached to at most one router (a unique constraint settles concurrent attachments).
The gateway is a port (``network:router_gateway``) on an external network with an
address from IPAM, like any port the API makes (:mod:`fabric.api.ports`).

Every committed change is announced to the network workers (``routers_changed``
fanout); each host realises the routers of the networks it carries with its own
gateway and NAT (:func:`fabric.network.dbstate.router_specs`, :mod:`fabric.network.nat`):
forwarding between the router's networks, and its subnets' outbound traffic translated
to the gateway's address. A host that misses the announcement converges when it syncs.
"""

from __future__ import annotations

import ipaddress
import logging

import falcon
import sqlalchemy as sa
from marshmallow import INCLUDE, Schema, fields, validate
from sqlalchemy import exc as sa_exc

from fabric import exception
from fabric.api import common, in_doubt, network_quotas, ports
from fabric.api.network import PREFIX, _owner, parse_route
from fabric.db.models import Network, Port, Router, RouterInterface, Subnet
from fabric.db.types import new_uuid
from fabric.network.model import ROUTER_GATEWAY_OWNER, ROUTER_INTERFACE_OWNER

LOG = logging.getLogger(__name__)


class _Loose(Schema):
    class Meta:
        unknown = INCLUDE  # distributed, ha, availability_zone_hints, flavor_id: accepted and ignored


class GatewaySchema(Schema):
    class Meta:
        unknown = INCLUDE  # qos_policy_id

    network_id = fields.String(validate=validate.Length(min=1, max=36))
    enable_snat = fields.Boolean(load_default=True)
    external_fixed_ips = fields.List(fields.Nested(ports.FixedIpSchema), load_default=None, allow_none=True,
                                     validate=validate.Length(max=4))


class RouterCreateSchema(_Loose):
    name = fields.String(load_default="", validate=validate.Length(max=255))
    description = fields.String(load_default="", validate=validate.Length(max=255))
    admin_state_up = fields.Boolean(load_default=True)
    external_gateway_info = fields.Nested(GatewaySchema, load_default=None, allow_none=True)
    project_id = fields.String(load_default=None)
    tenant_id = fields.String(load_default=None)


class RouteSchema(Schema):
    destination = fields.String(required=True, validate=validate.Length(max=64))
    nexthop = fields.String(required=True, validate=validate.Length(max=64))


class RouterUpdateSchema(Schema):
    """What ``router set`` / ``router unset --external-gateway`` may change."""

    name = fields.String(validate=validate.Length(max=255))
    description = fields.String(validate=validate.Length(max=255))
    admin_state_up = fields.Boolean()
    # {} or null clears the gateway (router unset --external-gateway).
    external_gateway_info = fields.Nested(GatewaySchema, allow_none=True)
    # Extra routes (null or [] clears them), checked by _checked_routes.
    routes = fields.List(fields.Nested(RouteSchema), allow_none=True, validate=validate.Length(max=64))


class InterfaceSchema(Schema):
    subnet_id = fields.String(validate=validate.Length(min=1, max=36))
    port_id = fields.String(validate=validate.Length(min=1, max=36))


ROUTER_CREATE = Schema.from_dict({"router": fields.Nested(RouterCreateSchema, required=True)})()
ROUTER_UPDATE = Schema.from_dict({"router": fields.Nested(RouterUpdateSchema, required=True)})()
INTERFACE = InterfaceSchema()


def router_document(session, router: Router) -> dict:
    gateway = None
    if router.external_network_id:
        held = ports.held_addresses(session, router.gateway_port_id) if router.gateway_port_id else {}
        gateway = {"network_id": router.external_network_id, "enable_snat": router.enable_snat,
                   "external_fixed_ips": [{"subnet_id": s, "ip_address": a} for s, (a, _) in sorted(held.items())]}
    return {"id": router.id, "name": router.name, "description": router.description,
            "project_id": router.project_id, "tenant_id": router.project_id, "admin_state_up": router.admin_state_up,
            "status": router.status, "external_gateway_info": gateway, "routes": list(router.routes or []),
            "distributed": False,
            "ha": False, "availability_zones": ["nova"], "availability_zone_hints": [], "flavor_id": None,
            "tags": [], "revision_number": 1, "created_at": common.isotime(router.created_at),
            "updated_at": common.isotime(router.updated_at or router.created_at)}


def _checked_routes(session, router: Router, routes: list[dict]) -> list[dict]:
    """Extra routes as stored: each destination a network, each next hop an address inside one
    of the router's subnets (where the router can reach it); Invalid naming the first bad one.
    Stored and shown; the network workers do not install them yet."""
    attached = [ipaddress.ip_network(cidr) for cidr in session.scalars(
        sa.select(Subnet.cidr).join(RouterInterface, RouterInterface.subnet_id == Subnet.id)
        .where(RouterInterface.router_id == router.id))]
    out = []
    for route in routes:
        destination, nexthop = parse_route(route, "router.routes")
        if not any(nexthop in subnet for subnet in attached):
            raise exception.Invalid(reason=f"router.routes: nexthop {nexthop} is not inside any subnet of router "
                                           f"{router.id} ({', '.join(map(str, attached)) or 'none attached'})")
        entry = {"destination": str(destination), "nexthop": str(nexthop)}
        if entry not in out:
            out.append(entry)
    return out


def announce(deps, context, router_id: str) -> None:
    """Tell every network worker that routers changed (committed); a failure is logged: the
    hosts converge from the database when they sync."""
    try:
        deps.clients.network.routers_changed(context)
    except exception.FabricError as err:
        LOG.warning("Router %s changed, but the network workers were not told: %s", router_id, err.message)


def _find(session, context, router_id: str) -> Router:
    router = session.get(Router, router_id)
    if router is None or not common.visible(context, router.project_id):
        raise exception.NotFound(kind="Router", ident=router_id)
    return router


def _external_network(session, network_id: str | None) -> Network:
    if not network_id:
        raise exception.Invalid(reason="router.external_gateway_info.network_id is required to set a gateway")
    network = session.get(Network, network_id)
    if network is None:
        raise exception.NotFound(kind="Network", ident=network_id)
    if not network.external:
        raise exception.Invalid(reason=f"router.external_gateway_info.network_id {network_id} is not an external "
                                       "network (router:external); a gateway is on an external network")
    return network


def set_gateway(deps, context, router_id: str, info: dict) -> None:
    """Give the router a gateway port on external network ``info["network_id"]`` with addresses
    from IPAM (``external_fixed_ips`` or one of the network's first IPv4 subnet). Replaces a
    gateway on another network; on the same network only ``enable_snat`` changes. Nothing is
    left half-made when IPAM refuses an address."""
    with deps.db.begin() as session:
        router = _find(session, context, router_id)
        network_id = _external_network(session, info.get("network_id")).id
        current = router.external_network_id
        if current == network_id and info.get("external_fixed_ips") is None:
            router.enable_snat = info.get("enable_snat", True)
    if current == network_id and info.get("external_fixed_ips") is None:
        announce(deps, context, router_id)
        return
    if current:
        clear_gateway(deps, context, router_id)
    port_id = new_uuid()
    with deps.db.begin() as session:
        router = _find(session, context, router_id)
        plan = ports.plan_addresses(session, network_id, info.get("external_fixed_ips"))
        if not plan:
            raise exception.Invalid(reason=f"external network {network_id} has no subnet to give router {router_id} "
                                           "a gateway address from; create one first")
        session.add(Port(id=port_id, network_id=network_id, project_id=router.project_id,
                         mac_address=ports.normalise_mac(None), device_id=router_id,
                         device_owner=ROUTER_GATEWAY_OWNER, status="ACTIVE", binding={}))
        session.flush()
        # Compare-and-swap: of two concurrent gateway sets, one wins; the other's port goes with its transaction.
        won = session.execute(sa.update(Router).where(Router.id == router_id, Router.gateway_port_id.is_(None))
                              .values(external_network_id=network_id, gateway_port_id=port_id,
                                      enable_snat=info.get("enable_snat", True))
                              .execution_options(synchronize_session=False)).rowcount
        if won != 1:
            raise exception.Conflict(reason=f"router {router_id}'s gateway was set meanwhile; try again")
    try:
        ports.allocate(deps, context, port_id, plan)
    except exception.FabricError:
        clear_gateway(deps, context, router_id)
        raise
    announce(deps, context, router_id)


def clear_gateway(deps, context, router_id: str) -> None:
    """Remove the router's gateway port and give its addresses back. Idempotent."""
    with deps.db.begin() as session:
        router = _find(session, context, router_id)
        port_id = router.gateway_port_id
        held = ports.held_addresses(session, port_id) if port_id else {}
        router.external_network_id, router.gateway_port_id = None, None
        session.flush()
        if port_id:
            session.execute(sa.delete(Port).where(Port.id == port_id).execution_options(synchronize_session=False))
    ports.release(deps, context, held)
    if port_id:
        announce(deps, context, router_id)


class Routers:
    def on_get(self, req, resp):
        context = common.ctx(req)
        query = sa.select(Router).order_by(Router.created_at, Router.id)
        if not context.is_admin:
            query = query.where(Router.project_id == common.require_project(context))
        query = common.equal_filters(query, req, {"id": Router.id, "name": Router.name})
        project = req.get_param("project_id") or req.get_param("tenant_id")
        if project:
            query = query.where(Router.project_id == project)
        with common.deps(req).db.begin() as session:
            common.respond(resp, {"routers": [router_document(session, r) for r in session.scalars(query)]})

    def on_post(self, req, resp):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, ROUTER_CREATE)["router"]
        owner = _owner(context, data)
        gateway = data["external_gateway_info"]
        if gateway and "network_id" not in gateway and gateway.get("external_fixed_ips") is None:
            gateway = None  # {} (or only enable_snat) names no gateway, as in Neutron
        if gateway:
            with deps.db.begin() as session:  # a bad gateway is refused before the router is written
                _external_network(session, gateway.get("network_id"))
        network_quotas.prepare(deps.db, owner, "router")
        with in_doubt.creating(deps.db, "the create of a router") as session:
            network_quotas.take(session, owner, "router")
            router = Router(project_id=owner, name=data["name"], description=data["description"],
                            admin_state_up=data["admin_state_up"], status="ACTIVE", enable_snat=True)
            session.add(router)
            session.flush()
            router_id = router.id
        if gateway:
            try:
                set_gateway(deps, context, router_id, gateway)
            except exception.FabricError:
                with deps.db.begin() as session:  # nothing half-made: the router and its quota go
                    session.execute(sa.delete(Router).where(Router.id == router_id))
                    network_quotas.give_back(session, owner, "router")
                raise
        with deps.db.begin() as session:
            common.respond(resp, {"router": router_document(session, session.get(Router, router_id))},
                           falcon.HTTP_201)


class RouterItem:
    def on_get(self, req, resp, router_id):
        with common.deps(req).db.begin() as session:
            common.respond(resp, {"router": router_document(session, _find(session, common.ctx(req), router_id))})

    def on_put(self, req, resp, router_id):
        deps, context = common.deps(req), common.ctx(req)
        data = common.body(req, ROUTER_UPDATE)["router"]
        with deps.db.begin() as session:
            router = _find(session, context, router_id)
            for name in ("name", "description", "admin_state_up"):
                if name in data:
                    setattr(router, name, data[name])
            if "routes" in data:
                router.routes = _checked_routes(session, router, data["routes"] or [])
        if "admin_state_up" in data:  # a router that is down is realised nowhere
            announce(deps, context, router_id)
        if "external_gateway_info" in data:
            info = data["external_gateway_info"]
            if info and info.get("network_id"):
                set_gateway(deps, context, router_id, info)
            elif info and info.get("external_fixed_ips") is not None:
                raise exception.Invalid(reason="router.external_gateway_info.network_id is required with "
                                               "external_fixed_ips")
            else:
                clear_gateway(deps, context, router_id)
        self.on_get(req, resp, router_id)

    def on_delete(self, req, resp, router_id):
        deps, context = common.deps(req), common.ctx(req)
        with deps.db.begin() as session:
            router = _find(session, context, router_id)
            legs = session.scalar(sa.select(sa.func.count()).select_from(RouterInterface)
                                  .where(RouterInterface.router_id == router_id))
            if legs:
                raise exception.Conflict(reason=f"router {router_id} still has {legs} interface(s); remove them "
                                                "first (router remove subnet)")
            owner = router.project_id
        clear_gateway(deps, context, router_id)
        with deps.db.begin() as session:
            # Guarded: an interface added meanwhile keeps the router (its FK would cascade otherwise).
            gone = session.execute(sa.delete(Router).where(
                Router.id == router_id, ~sa.exists().where(RouterInterface.router_id == router_id))
                .execution_options(synchronize_session=False)).rowcount
            if gone != 1:
                raise exception.Conflict(reason=f"router {router_id} got an interface meanwhile; not deleted")
            network_quotas.give_back(session, owner, "router")
        resp.status = falcon.HTTP_204


def _interface_document(router: Router, port_id: str, subnet_id: str, network_id: str) -> dict:
    return {"id": router.id, "tenant_id": router.project_id, "project_id": router.project_id, "port_id": port_id,
            "subnet_id": subnet_id, "subnet_ids": [subnet_id], "network_id": network_id}


class AddInterface:
    """``PUT /routers/{id}/add_router_interface`` with ``subnet_id`` (the router takes the
    subnet's gateway address on a port of its own) or ``port_id`` (an unbound port of one
    address becomes the router's leg on that address's subnet; removing the interface
    deletes the port and gives its address back, as Neutron does)."""

    def on_put(self, req, resp, router_id):
        deps, context = common.deps(req), common.ctx(req)
        data = common.load(INTERFACE, common.read_json(req))
        if bool(data.get("port_id")) == bool(data.get("subnet_id")):
            raise exception.Invalid(reason="add_router_interface takes either subnet_id or port_id")
        if data.get("port_id"):
            doc = self._attach_port(deps, context, router_id, data["port_id"])
            announce(deps, context, router_id)
            common.respond(resp, doc)
            return
        subnet_id = data["subnet_id"]
        port_id = new_uuid()
        try:
            with deps.db.begin() as session:
                router = _find(session, context, router_id)
                subnet = session.get(Subnet, subnet_id)
                network = session.get(Network, subnet.network_id) if subnet else None
                if subnet is None or not (common.visible(context, subnet.project_id) or network.shared):
                    raise exception.NotFound(kind="Subnet", ident=subnet_id)
                self._check(session, router, subnet, network)
                session.add(Port(id=port_id, network_id=network.id, project_id=router.project_id,
                                 mac_address=ports.normalise_mac(None), device_id=router.id,
                                 device_owner=ROUTER_INTERFACE_OWNER, status="ACTIVE", binding={}))
                session.flush()
                session.add(RouterInterface(port_id=port_id, router_id=router.id, subnet_id=subnet.id,
                                            ip_address=subnet.gateway_ip))
                session.flush()
                doc = _interface_document(router, port_id, subnet.id, network.id)
        except sa_exc.IntegrityError:
            raise exception.Conflict(reason=f"subnet {subnet_id} was attached to a router meanwhile") from None
        announce(deps, context, router_id)
        common.respond(resp, doc)

    def _attach_port(self, deps, context, router_id: str, port_id: str) -> dict:
        try:
            with deps.db.begin() as session:
                router = _find(session, context, router_id)
                port = ports.find(session, context, port_id)
                if port.device_id or port.device_owner:
                    raise exception.Conflict(reason=f"port {port.id} is in use by {port.device_owner or 'device'} "
                                                    f"{port.device_id or ''}".rstrip())
                held = ports.held_addresses(session, port.id)
                if len(held) != 1:
                    raise exception.Invalid(reason=f"port {port.id} has {len(held)} fixed IPs; a router interface "
                                                   "takes a port with exactly one")
                ((subnet_id, (address, _token)),) = held.items()
                subnet = session.get(Subnet, subnet_id)
                network = session.get(Network, subnet.network_id)
                self._check(session, router, subnet, network, needs_gateway=False)
                port.device_id, port.device_owner, port.status = router.id, ROUTER_INTERFACE_OWNER, "ACTIVE"
                # A router's legs count against no port quota (those it makes for subnets never do).
                network_quotas.give_back(session, port.project_id, "port")
                session.add(RouterInterface(port_id=port.id, router_id=router.id, subnet_id=subnet.id,
                                            ip_address=address))
                session.flush()
                return _interface_document(router, port.id, subnet.id, network.id)
        except sa_exc.IntegrityError:
            raise exception.Conflict(reason=f"port {port_id}'s subnet was attached to a router meanwhile") from None

    @staticmethod
    def _check(session, router: Router, subnet: Subnet, network: Network, needs_gateway: bool = True) -> None:
        attached = session.scalar(sa.select(RouterInterface.router_id).where(RouterInterface.subnet_id == subnet.id))
        if attached is not None:
            raise exception.Conflict(reason=f"subnet {subnet.id} is already attached to router {attached}")
        if network.external:
            raise exception.Invalid(reason=f"subnet {subnet.id} is on external network {network.id}; set it as the "
                                           "router's gateway instead (router set --external-gateway)")
        if needs_gateway and not subnet.gateway_ip:
            raise exception.Invalid(reason=f"subnet {subnet.id} has no gateway_ip for the router to take")
        new = ipaddress.ip_network(subnet.cidr)
        for other_id, cidr in session.execute(
                sa.select(Subnet.id, Subnet.cidr).join(RouterInterface, RouterInterface.subnet_id == Subnet.id)
                .where(RouterInterface.router_id == router.id)):
            if ipaddress.ip_network(cidr).overlaps(new):
                raise exception.Invalid(reason=f"subnet {subnet.id} ({new}) overlaps subnet {other_id} ({cidr}) "
                                               f"already on router {router.id}")


class RemoveInterface:
    """``PUT /routers/{id}/remove_router_interface`` with ``subnet_id`` or ``port_id``."""

    def on_put(self, req, resp, router_id):
        deps, context = common.deps(req), common.ctx(req)
        data = common.load(INTERFACE, common.read_json(req))
        if not data.get("subnet_id") and not data.get("port_id"):
            raise exception.Invalid(reason="remove_router_interface takes subnet_id or port_id")
        with deps.db.begin() as session:
            router = _find(session, context, router_id)
            query = sa.select(RouterInterface).where(RouterInterface.router_id == router.id)
            for key in ("subnet_id", "port_id"):
                if data.get(key):
                    query = query.where(getattr(RouterInterface, key) == data[key])
            leg = session.scalars(query).first()
            if leg is None:
                what = " and ".join(f"{k} {data[k]}" for k in ("subnet_id", "port_id") if data.get(k))
                raise exception.NotFound(kind="Router interface", ident=f"{what} on router {router_id}")
            port = session.get(Port, leg.port_id)
            doc = _interface_document(router, leg.port_id, leg.subnet_id, port.network_id)
            held = ports.held_addresses(session, leg.port_id)  # a port attached by port_id holds its address
            session.execute(sa.delete(RouterInterface).where(RouterInterface.port_id == leg.port_id)
                            .execution_options(synchronize_session=False))
            session.execute(sa.delete(Port).where(Port.id == leg.port_id).execution_options(synchronize_session=False))
        ports.release(deps, context, held)
        announce(deps, context, router_id)
        common.respond(resp, doc)


OPERATIONS = [
    ("get", f"{PREFIX}/routers", "List routers", None, 200),
    ("post", f"{PREFIX}/routers", "Create a router (optionally with an external gateway)", ROUTER_CREATE, 201),
    ("get", f"{PREFIX}/routers/{{router_id}}", "Show a router", None, 200),
    ("put", f"{PREFIX}/routers/{{router_id}}", "Set a router's name, description, admin state or external gateway "
     "(external_gateway_info {} clears it)", ROUTER_UPDATE, 200),
    ("delete", f"{PREFIX}/routers/{{router_id}}", "Delete a router (409 while it has interfaces)", None, 204),
    ("put", f"{PREFIX}/routers/{{router_id}}/add_router_interface", "Attach a subnet (the router takes its gateway "
     "address) or an unbound port of one address", INTERFACE, 200),
    ("put", f"{PREFIX}/routers/{{router_id}}/remove_router_interface", "Detach a subnet (by subnet_id or port_id)",
     INTERFACE, 200),
]


def register(app: falcon.App) -> None:
    app.add_route(f"{PREFIX}/routers", Routers())
    app.add_route(f"{PREFIX}/routers/{{router_id}}", RouterItem())
    app.add_route(f"{PREFIX}/routers/{{router_id}}/add_router_interface", AddInterface())
    app.add_route(f"{PREFIX}/routers/{{router_id}}/remove_router_interface", RemoveInterface())
