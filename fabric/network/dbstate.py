"""Build a host's desired :class:`~fabric.network.model.HostState` from the database.

Read-only: one short transaction. What a host carries: every network with at
least one port other than its DHCP port bound to it (:func:`carried_networks`),
those ports as endpoints, its DHCP server on each of those networks,
the other hosts of the topology (tunnel address, routed block), its own routed
layout, and the floating addresses associated on it.

Conventions read here (the api and compute sides write them):
``Port.host`` is the host the port is plugged on; ``Port.binding`` may hold
``kind`` ("tap"|"veth"), ``netns`` and ``ifname``; a port whose
``device_owner`` is :data:`~fabric.network.model.DHCP_PORT_OWNER` carries this
host's DHCP server address.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

import sqlalchemy as sa

from fabric import exception
from fabric.config import Settings
from fabric.db import Database
from fabric.db.models import (
    AddressAllocation,
    Datacenter,
    FloatingIp,
    Network,
    Port,
    PortSecurityGroup,
    Router,
    RouterInterface,
    SecurityGroupRule,
    Segment,
    Subnet,
    Tenant,
    TopologyHost,
)
from fabric.network import ipv6
from fabric.network.model import (
    COMPUTE_PORT_OWNER_PREFIX,
    DHCP_PORT_OWNER,
    EndpointSpec,
    FloatingSpec,
    HostSpec,
    HostState,
    NetworkSpec,
    RoutedSpec,
    RouterSpec,
    segment_match,
)
from fabric.network.secgroups import RuleSpec, SecurityState, enforced_protocol, link_local, merged_addresses

LOG = logging.getLogger(__name__)


def datacenter_layout(session: sa.orm.Session) -> tuple[Datacenter | None, Any]:
    """The default datacenter and its Layout, or (None, None) before it is configured."""
    from fabric.ipam.topology import DEFAULT_DATACENTER, layout_of

    row = session.scalars(sa.select(Datacenter).where(Datacenter.name == DEFAULT_DATACENTER)).first()
    return (row, layout_of(row)) if row is not None else (None, None)


def ipv4_addresses(session: sa.orm.Session, port_ids: list[str]) -> dict[str, str]:
    """An IPv4 address held by each of ``port_ids`` that holds one."""
    if not port_ids:
        return {}
    rows = session.scalars(sa.select(AddressAllocation).where(AddressAllocation.port_id.in_(port_ids)))
    found: dict[str, str] = {}
    for row in rows:
        if ipaddress.ip_address(row.address).version == 4:
            found.setdefault(row.port_id, row.address)
    return found


def network_subnets(session: sa.orm.Session, network_ids: list[str]) -> dict[str, list[Subnet]]:
    """Network id -> its subnets of both versions, oldest first (each of ``network_ids`` is in the
    answer): one read for all that a plug derives from them (:func:`network_spec`,
    :func:`port_addresses`), which read them three times over before."""
    found: dict[str, list[Subnet]] = {network_id: [] for network_id in network_ids}
    if network_ids:
        for subnet in session.scalars(sa.select(Subnet).where(Subnet.network_id.in_(network_ids))
                                      .order_by(Subnet.created_at, Subnet.id)):
            found[subnet.network_id].append(subnet)
    return found


def _addresses_from_mac(subnet: Subnet) -> bool:
    """Whether a port's address on ``subnet`` is derived from its MAC (SLAAC, DHCPv6-stateless)."""
    return (subnet.ip_version == 6
            and ipv6.served_mode(subnet.ipv6_address_mode, subnet.ipv6_ra_mode) in ipv6.AUTO_ADDRESS)


def slaac_subnets(session: sa.orm.Session, network_ids: list[str],
                  subnets: dict[str, list[Subnet]] | None = None) -> dict[str, list[Subnet]]:
    """Network id -> its SLAAC (and DHCPv6-stateless) subnets, oldest first: a port's address on
    each is derived from its MAC, never allocated (see :mod:`fabric.network.ipv6`). ``subnets``:
    the networks' subnets as :func:`network_subnets` read them (read here when it lacks one)."""
    if subnets is None or any(network_id not in subnets for network_id in network_ids):
        subnets = network_subnets(session, network_ids)
    found: dict[str, list[Subnet]] = {}
    for network_id in network_ids:
        auto = [subnet for subnet in subnets.get(network_id, ()) if _addresses_from_mac(subnet)]
        if auto:
            found[network_id] = auto
    return found


def ipv6_addresses(session: sa.orm.Session, ports: list[Port]) -> dict[str, str]:
    """A global IPv6 address of each of ``ports`` that has one: the address IPAM allocated it
    (DHCPv6-stateful), else the one it makes on its network's first SLAAC subnet."""
    return port_addresses(session, ports)[1]


def port_addresses(session: sa.orm.Session, ports: list[Port], subnets: dict[str, list[Subnet]] | None = None,
                   held: list[tuple[str, str]] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """(an IPv4 address of each of ``ports`` that holds one, as :func:`ipv4_addresses` gives it;
    a global IPv6 address of each that has one, as :func:`ipv6_addresses` gives it), from one
    read of their allocations (a plug read them twice). ``subnets``: as :func:`slaac_subnets`;
    ``held``: the ports' allocations as (port id, address), oldest first, when the caller read
    them (read here if not given)."""
    found4: dict[str, str] = {}
    found: dict[str, str] = {}
    if not ports:
        return found4, found
    if held is None:
        held = session.execute(sa.select(AddressAllocation.port_id, AddressAllocation.address)
                               .where(AddressAllocation.port_id.in_([p.id for p in ports]))
                               .order_by(AddressAllocation.id)).all()
    for port_id, address in held:
        bare = address.split("/")[0]
        if ipaddress.ip_address(bare).version == 6:
            found.setdefault(port_id, bare)
        else:
            found4.setdefault(port_id, address)
    _add_slaac_addresses(session, ports, found, subnets)
    return found4, found


def _add_slaac_addresses(session: sa.orm.Session, ports: list[Port], found: dict[str, str],
                         subnets: dict[str, list[Subnet]] | None = None) -> None:
    """Into ``found``: the SLAAC address of each of ``ports`` without a global IPv6 address there."""
    auto = slaac_subnets(session, sorted({p.network_id for p in ports}), subnets)
    for port in ports:
        if port.id not in found and auto.get(port.network_id):
            found[port.id] = ipv6.slaac_address(auto[port.network_id][0].cidr, port.mac_address)


def ipv6_service(session: sa.orm.Session, network: Network, dhcp_port: Port | None,
                 subnets: list[Subnet] | None = None) -> tuple[str | None, str | None]:
    """(the CIDR on the host's bridge, the mode served) of the network's first IPv6 subnet with a
    mode, as the host of ``dhcp_port`` serves it; (None, None) without one, without a DHCP port or
    on a network whose bridge is not fabric's. The host's address is its DHCP port's SLAAC address
    (EUI-64 of a MAC: IPAM's lowest-first allocations never reach such an address). ``subnets``:
    the network's, oldest first, as :func:`network_subnets` reads them (read here if not given)."""
    if dhcp_port is None or network.network_type not in ("vxlan", "vlan"):
        return None, None
    if subnets is None:
        subnets = network_subnets(session, [network.id])[network.id]
    for subnet in subnets:
        if subnet.ip_version != 6:
            continue
        mode = ipv6.served_mode(subnet.ipv6_address_mode, subnet.ipv6_ra_mode)
        if mode is not None:
            prefixlen = ipaddress.ip_network(subnet.cidr).prefixlen
            return f"{ipv6.slaac_address(subnet.cidr, dhcp_port.mac_address)}/{prefixlen}", mode
    return None, None


#: ``host``'s DHCP port on ``network`` with each address it holds (or one row, None: it holds
#: none), oldest allocation first: one statement where the port and then its addresses were two.
_DHCP_PORT_ADDRESSES = (sa.select(Port, AddressAllocation.address)
                        .outerjoin(AddressAllocation, AddressAllocation.port_id == Port.id)
                        .where(Port.network_id == sa.bindparam("network"), Port.host == sa.bindparam("host"),
                               Port.device_owner == DHCP_PORT_OWNER)
                        .order_by(Port.id, AddressAllocation.id))


def dhcp_port_address(session: sa.orm.Session, network_id: str, host: str) -> tuple[Port | None, str | None]:
    """(``host``'s DHCP port on network ``network_id``, an IPv4 address it holds, as
    :func:`ipv4_addresses` gives it), each None when there is none."""
    dhcp_port, address = None, None
    for port, held in session.execute(_DHCP_PORT_ADDRESSES, {"network": network_id, "host": host}):
        if dhcp_port is None:
            dhcp_port = port
        elif port.id != dhcp_port.id:
            break
        if held is not None and address is None and ipaddress.ip_address(held).version == 4:
            address = held
    return dhcp_port, address


def network_spec(session: sa.orm.Session, network: Network, host: str, layout: Any,
                 subnets: list[Subnet] | None = None) -> NetworkSpec:
    """The spec of one network as ``host`` carries it (its DHCP address on the oldest IPv4
    subnet). ``subnets``: the network's, oldest first, as :func:`network_subnets` reads them
    (read here if not given)."""
    host_address, dhcp = None, False
    if subnets is None:
        subnets = network_subnets(session, [network.id])[network.id]
    subnet = next((s for s in subnets if s.ip_version == 4), None)
    dhcp_port, address = dhcp_port_address(session, network.id, host)
    if subnet is not None and address is not None:
        host_address = f"{address}/{ipaddress.ip_network(subnet.cidr).prefixlen}"
        dhcp = bool(subnet.enable_dhcp)
    mask = value = None
    if network.network_type == "routed" and network.segment_id is not None and layout is not None:
        segment = session.get(Segment, network.segment_id)
        tenant = session.get(Tenant, segment.tenant_id) if segment is not None else None
        if segment is not None and tenant is not None:
            mask, value = segment_match(layout, tenant.number, segment.number)
    ipv6_address, ipv6_mode = ipv6_service(session, network, dhcp_port, subnets)
    return NetworkSpec(id=network.id, network_type=network.network_type, project_id=network.project_id,
                       segmentation_id=network.segmentation_id, physical_bridge=network.physical_bridge,
                       mtu=network.mtu, host_address=host_address, dhcp=dhcp,
                       match_mask=mask, match_value=value, ipv6_address=ipv6_address, ipv6_mode=ipv6_mode)


def external_placement(session: sa.orm.Session, network_id: str | None, address: str) -> tuple[str | None, int]:
    """(provider:physical_network, prefix length) of ``address`` on external network
    ``network_id``: where the edge (:mod:`fabric.network.edge`) puts it. (None, 32) when
    the network names no physical network; 32 when no subnet of it holds the address."""
    network = session.get(Network, network_id) if network_id else None
    if network is None or not network.physical_bridge:
        return None, 32
    ip = ipaddress.ip_address(address)
    for cidr in session.scalars(sa.select(Subnet.cidr).where(Subnet.network_id == network_id,
                                                               Subnet.ip_version == 4)):
        if ip in ipaddress.ip_network(cidr):
            return network.physical_bridge, ipaddress.ip_network(cidr).prefixlen
    return network.physical_bridge, 32


def floating_spec(session: sa.orm.Session, address: str, fixed_address: str,
                  network_id: str | None = None) -> FloatingSpec:
    """The spec of floating ``address`` translated to ``fixed_address``, placed on its external
    network (looked up by address when ``network_id`` is not given)."""
    if network_id is None:
        network_id = session.scalars(sa.select(FloatingIp.floating_network_id)
                                     .where(FloatingIp.address == address)).first()
    physical, prefixlen = external_placement(session, network_id, address)
    return FloatingSpec(address, fixed_address, physical_network=physical, prefixlen=prefixlen)


def router_specs(session: sa.orm.Session, network_ids: list[str]) -> dict[str, RouterSpec]:
    """The routers (up) with a leg on one of ``network_ids`` (a host's networks), as that host
    realises them: the legs it carries, every IPv4 subnet of the router, and the address of
    its gateway when it translates (enable_snat)."""
    if not network_ids:
        return {}
    here = (sa.select(RouterInterface.router_id).join(Subnet, Subnet.id == RouterInterface.subnet_id)
            .where(Subnet.network_id.in_(network_ids)))
    legs = session.execute(sa.select(RouterInterface.router_id, Subnet.network_id, Subnet.cidr, Subnet.ip_version)
                           .join(Subnet, Subnet.id == RouterInterface.subnet_id)
                           .where(RouterInterface.router_id.in_(here))).all()
    specs: dict[str, RouterSpec] = {}
    if not legs:  # no router has a leg here (every plug asks): no need to read routers
        return specs
    for router in session.scalars(sa.select(Router).where(Router.id.in_(here), Router.admin_state_up.is_(True))
                                  .order_by(Router.id)):
        snat = None
        if router.enable_snat and router.gateway_port_id:
            snat = ipv4_addresses(session, [router.gateway_port_id]).get(router.gateway_port_id)
        mine = [(network, cidr) for r, network, cidr, version in legs if r == router.id and version == 4]
        snat = snat.split("/")[0] if snat else None
        physical, prefixlen = external_placement(session, router.external_network_id, snat) if snat else (None, 32)
        specs[router.id] = RouterSpec(id=router.id, networks=sorted({n for n, _ in mine if n in network_ids}),
                                      subnets=sorted({c for _, c in mine}), snat_address=snat,
                                      physical_network=physical, snat_prefixlen=prefixlen)
    return specs


def endpoint_spec(port: Port, address: str | None, address6: str | None = None) -> EndpointSpec:
    binding = port.binding or {}
    return EndpointSpec(id=port.id, network_id=port.network_id, mac=port.mac_address, address=address,
                        kind=binding.get("kind", "tap"), netns=binding.get("netns"),
                        ifname=binding.get("ifname", "eth0"), address6=address6)


def carried_networks(ports: list[Port]) -> list[str]:
    """The networks a host with ``ports`` bound to it carries: those where it has a port other
    than its DHCP port. The DHCP port outlives the host's last guest on the network (compute
    keeps it for the next one), and a DHCP server nobody on the host asks is not needed: the
    network's devices exist only where it has ports, and go when the last one leaves."""
    return sorted({p.network_id for p in ports if p.device_owner != DHCP_PORT_OWNER})


def host_state(db: Database, host: str, settings: Settings) -> HostState:
    """Everything ``host``'s data plane should hold, per the database."""
    state = HostState()
    with db.begin() as session:
        _, layout = datacenter_layout(session)
        ports = list(session.scalars(sa.select(Port).where(Port.host == host)))
        network_ids = carried_networks(ports)
        subnets = network_subnets(session, sorted({p.network_id for p in ports}))
        for network in session.scalars(sa.select(Network).where(Network.id.in_(network_ids))):
            try:
                state.networks[network.id] = network_spec(session, network, host, layout, subnets[network.id])
            except exception.Invalid as exc:  # one bad row must not stop the whole host
                LOG.error("network %s cannot be set up on %s: %s", network.id, host, exc.message)
        state.routers = router_specs(session, sorted(state.networks))
        addresses, addresses6 = port_addresses(session, ports, subnets)
        for port in ports:
            if port.device_owner != DHCP_PORT_OWNER and port.network_id in state.networks:
                try:
                    state.endpoints[port.id] = endpoint_spec(port, addresses.get(port.id), addresses6.get(port.id))
                except exception.Invalid as exc:
                    LOG.error("port %s cannot be plugged on %s: %s", port.id, host, exc.message)
        for row in session.scalars(sa.select(TopologyHost)):
            block = str(layout.host_block(row.number)) if layout is not None else None
            if row.name == host:
                if layout is not None and any(n.network_type == "routed" for n in state.networks.values()):
                    state.routed = RoutedSpec(gateway=str(layout.host_gateway(row.number)), block=block,
                                              datacenter=str(layout.prefix))
            elif row.tunnel_address:
                state.remote_hosts[row.name] = HostSpec(row.name, row.tunnel_address, block)
        for floating in session.scalars(sa.select(FloatingIp).where(FloatingIp.host == host,
                                                                    FloatingIp.fixed_address.is_not(None))):
            state.floating[floating.address] = floating_spec(session, floating.address, floating.fixed_address,
                                                             floating.floating_network_id)
    return state


def security_state(db: Database, host: str, known: SecurityState | None = None) -> SecurityState:
    """What ``host`` enforces: its filtered ports and their groups, those groups' rules,
    and the members (on every host) of each group they name as remote: their IPv4
    addresses, then their IPv6 link-local and global ones.

    A port is filtered when it is a guest's (``compute:*`` owner) or is in a group:
    a guest port in no group gets nothing but DHCP and metadata through.

    With ``known`` (a state read before and kept up to date since), the members of the remote
    groups it holds are taken from it (they become this state's), and only those of the others
    are read: a read that costs the host's own ports and rules, not every member again.
    """
    with db.read() as session:
        return security_state_in(session, host, known)


def security_state_in(session: sa.orm.Session, host: str, known: SecurityState | None = None) -> SecurityState:
    """:func:`security_state` read through the caller's ``session``."""
    security = SecurityState()
    # The host's ports with their groups, in one statement (a port in no group: one row, None).
    for port_id, owner, group_id in session.execute(_HOST_PORT_GROUPS, {"host": host}):
        if group_id is not None:
            security.ports.setdefault(port_id, []).append(group_id)
        elif (owner or "").startswith(COMPUTE_PORT_OWNER_PREFIX):
            security.ports[port_id] = []
    groups = sorted({g for gs in security.ports.values() for g in gs})
    remotes: set[str] = set()
    if groups:
        for row in session.scalars(sa.select(SecurityGroupRule)
                                   .where(SecurityGroupRule.security_group_id.in_(groups))
                                   .order_by(SecurityGroupRule.created_at, SecurityGroupRule.id)):
            security.groups.setdefault(row.security_group_id, []).append(rule_spec(row))
            if row.remote_group_id is not None:
                remotes.add(row.remote_group_id)
        for group in groups:
            security.groups.setdefault(group, [])
    if remotes:
        held = known.member_ports if known is not None else {}
        security.member_ports = {group: held[group] for group in sorted(remotes) if group in held}
        security.members = {group: known.members[group] for group in security.member_ports}
        unknown = sorted(remotes - held.keys())
        if unknown:
            read = remote_member_ports(session, unknown)
            security.member_ports.update(read)
            security.members.update({group: merged_addresses(ports.values()) for group, ports in read.items()})
    return security


_HOST_PORT_GROUPS = (sa.select(Port.id, Port.device_owner, PortSecurityGroup.security_group_id)
                     .select_from(sa.outerjoin(Port, PortSecurityGroup, PortSecurityGroup.port_id == Port.id))
                     .where(Port.host == sa.bindparam("host"))
                     .order_by(Port.id, PortSecurityGroup.security_group_id))

#: The members of remote groups with what gives their addresses, in one statement whatever
#: their number: a member port's id sent back in ``IN (...)`` made a statement of a new text
#: for every count, and building and parsing it cost more than the rest of the read (28 ms of
#: a host's CPU for 300 members, on every group change of a boot storm).
_MEMBERSHIPS = (sa.select(PortSecurityGroup.security_group_id, Port.id, Port.mac_address, Port.network_id,
                          AddressAllocation.address)
                .select_from(sa.join(PortSecurityGroup, Port, Port.id == PortSecurityGroup.port_id)
                             .outerjoin(AddressAllocation, AddressAllocation.port_id == Port.id))
                .order_by(AddressAllocation.id))
_MEMBERS = _MEMBERSHIPS.where(PortSecurityGroup.security_group_id.in_(sa.bindparam("groups", expanding=True)))
#: One port's memberships with the same (what a host announces of a port it plugs).
_PORT_MEMBERSHIP = _MEMBERSHIPS.where(Port.id == sa.bindparam("port"))


def remote_members(session: sa.orm.Session, groups: list[str]) -> dict[str, list[str]]:
    """Each of ``groups`` -> the addresses of its members (ports on every host), IPv4 ones
    first, each version in order: a member's IPv4 address, its IPv6 link-local one and its
    global one (allocated, else made on its network's first SLAAC subnet), as
    :func:`ipv4_addresses` and :func:`ipv6_addresses` give them."""
    return {group: merged_addresses(ports.values()) for group, ports in remote_member_ports(session, groups).items()}


def remote_member_ports(session: sa.orm.Session, groups: list[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """Each of ``groups`` -> its member ports (on every host) -> their addresses (as
    :func:`remote_members` orders them per port), in one statement whatever their number."""
    return _members_of(session, session.execute(_MEMBERS, {"groups": groups}), groups)


def port_membership(session: sa.orm.Session, port_id: str) -> tuple[list[str], tuple[str, ...]]:
    """(the groups ``port_id`` is in, sorted; its addresses as a remote group member holds them):
    what :func:`remote_member_ports` says of it. ([], ()) for a port in no group or none at all."""
    found = _members_of(session, session.execute(_PORT_MEMBERSHIP, {"port": port_id}), [])
    groups = sorted(group for group, ports in found.items() if port_id in ports)
    return groups, (found[groups[0]][port_id] if groups else ())


def plugged_membership(endpoint: EndpointSpec,
                       security: SecurityState) -> tuple[list[str], tuple[str, ...]] | None:
    """What :func:`port_membership` says of ``endpoint``'s port, from what its plug holds: the
    port's groups as ``security`` (its host's state, just read) has them, and its addresses as
    ``endpoint`` (read from the port's allocations and subnets by
    :meth:`fabric.network.api.NetworkService.plug_port`) has them. None when ``security`` cannot
    tell: the port is not one of its filtered ports (bound to another host, say)."""
    groups = security.ports.get(endpoint.id)
    if groups is None:
        return None
    if not groups:
        return [], ()
    return sorted(groups), member_addresses(endpoint.address, endpoint.mac, endpoint.address6)


def member_addresses(address: str | None, mac: str | None, address6: str | None) -> tuple[str, ...]:
    """A remote group member's addresses, each when it has one: its IPv4 ``address``, the
    link-local one of its ``mac`` and its global IPv6 ``address6`` (all without prefix)."""
    return tuple(a for a in (address, link_local(mac) if mac else None, address6) if a)


def _members_of(session: sa.orm.Session, rows: Any, groups: list[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """Rows of (group, port, MAC, network, allocated address or None) -> group -> port -> the
    port's addresses: its IPv4 one, its link-local one and its global IPv6 one (allocated, else
    made on its network's first SLAAC subnet), each when it has one. ``groups`` are in the
    answer even without members."""
    ports: dict[str, tuple[str, str]] = {}  # port -> (MAC, network)
    in_group: dict[str, dict[str, None]] = {group: {} for group in groups}  # ordered sets
    v4: dict[str, str] = {}
    v6: dict[str, str] = {}
    for group, port_id, mac, network_id, address in rows:
        if port_id not in ports:
            ports[port_id] = (mac, network_id)
        in_group.setdefault(group, {})[port_id] = None
        if address is not None:
            address = address.split("/")[0]
            (v4 if ":" not in address else v6).setdefault(port_id, address)
    auto = slaac_subnets(session, sorted({network_id for _, network_id in ports.values()}))
    for port_id, (mac, network_id) in ports.items():
        if port_id not in v6 and auto.get(network_id):
            v6[port_id] = ipv6.slaac_address(auto[network_id][0].cidr, mac)
    addresses = {port_id: member_addresses(v4.get(port_id), mac, v6.get(port_id)) for port_id, (mac, _) in ports.items()}
    return {group: {port_id: addresses[port_id] for port_id in port_ids} for group, port_ids in in_group.items()}


def rule_spec(row: SecurityGroupRule) -> RuleSpec:
    """The enforced form of a stored rule (stored rules were checked when written)."""
    return RuleSpec(row.direction, row.ethertype, enforced_protocol(row.protocol, row.ethertype), row.port_range_min,
                    row.port_range_max, row.remote_ip_prefix, row.remote_group_id)
