"""What the network driver is asked to make real on one host, as plain values.

The manager builds these from the database; the driver never reads the
database. Every spec is JSON-able (``to_dict``/``from_dict``) so a whole host
state can cross RPC or a process boundary.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from fabric import exception
from fabric.network import ipv6

#: Network type -> (lowest, highest) segmentation id it takes; None: the type takes none.
#: The one home of these ranges: the API allocates ids from them, specs are checked against them.
SEGMENT_RANGES: dict[str, tuple[int, int] | None] = {
    "flat": None,
    "vlan": (1, 4094),  # 802.1Q: 0 and 4095 are reserved
    "vxlan": (1, 2**24 - 1),  # a 24-bit VNI; 0 is not used
    "routed": None,
}
NETWORK_TYPES = tuple(SEGMENT_RANGES)
ENDPOINT_KINDS = ("tap", "veth")

#: MTU of a network on a 1500-byte underlay: VXLAN's outer headers take 50 bytes.
ETHERNET_MTU = 1500
VXLAN_MTU = ETHERNET_MTU - 50

#: ``Port.device_owner`` of a network's DHCP server port on one host (compute makes
#: it with the host's first guest port; the network worker serves DHCP from its address).
DHCP_PORT_OWNER = "network:dhcp"
#: ``Port.device_owner`` of a guest's port: this prefix and the availability zone
#: (``compute:nova``). A network with such ports is in use by servers.
COMPUTE_PORT_OWNER_PREFIX = "compute:"


#: ``Port.device_owner`` of a router's leg on one of its subnets (it holds the subnet's gateway
#: address) and of its gateway port on an external network.
ROUTER_INTERFACE_OWNER = "network:router_interface"
ROUTER_GATEWAY_OWNER = "network:router_gateway"


def port_request_token(port_id: str, subnet_id: str) -> str:
    """The IPAM request token a port's address in one subnet is held under, when the Network
    API made the port (``port create``, a router's gateway): one address per subnet."""
    return f"port:{port_id}:{subnet_id}"


def floating_request_token(floating_id: str) -> str:
    """The IPAM request token a floating IP's address is held under (it has no port)."""
    return f"floating:{floating_id}"


def default_mtu(network_type: str) -> int:
    """The MTU a network of ``network_type`` gets when none is asked for."""
    return VXLAN_MTU if network_type == "vxlan" else ETHERNET_MTU


def _check_cidr(value: str | None, what: str) -> None:
    if value is None:
        return
    try:
        ipaddress.ip_interface(value)
    except ValueError:
        raise exception.Invalid(reason=f"{what} {value!r} is not an IPv4 address with prefix length "
                                       "(e.g. 10.0.0.1/24)") from None


def _check_ip(value: str | None, what: str) -> None:
    if value is None:
        return
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        raise exception.Invalid(reason=f"{what} {value!r} is not an IPv4 address") from None


def _check_ipv6(value: str | None, what: str, with_prefix: bool = False) -> None:
    if value is None:
        return
    try:
        parsed = ipaddress.ip_interface(value) if with_prefix else ipaddress.ip_address(value)
        if parsed.version != 6 or (with_prefix and "/" not in value):
            raise ValueError(value)
    except ValueError:
        example = "fd00::1/64" if with_prefix else "fd00::5"
        raise exception.Invalid(reason=f"{what} {value!r} is not an IPv6 address{' with prefix length' if with_prefix else ''} "
                                       f"(e.g. {example})") from None


#: Fields added after the first release: left out of a spec's dict while unset, so a worker of the
#: previous release (whose ``from_dict`` refuses unknown fields) still takes specs without IPv6.
LATER_FIELDS = ("address6", "ipv6_address", "ipv6_mode")


class _Spec:
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: v for k, v in data.items() if not (k in LATER_FIELDS and v is None)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise exception.Invalid(reason=f"unknown {cls.__name__} fields {sorted(unknown)}; "
                                           f"accepted: {sorted(names)}")
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class NetworkSpec(_Spec):
    """One network as this host must carry it.

    ``host_address`` (CIDR) goes on this host's bridge of an L2 network: the DHCP
    server's and router's address there. ``ipv6_address`` (CIDR) goes there too when the
    network has an IPv6 subnet served in ``ipv6_mode`` (see :mod:`fabric.network.ipv6`): the
    host advertises its prefix and, in the DHCPv6 modes, answers DHCPv6 from it. Routed networks are matched by address
    bits: an address belongs to the network when ``addr & match_mask == match_value``.
    """

    id: str
    network_type: str
    project_id: str = ""
    segmentation_id: int | None = None
    physical_bridge: str | None = None
    mtu: int = VXLAN_MTU
    host_address: str | None = None
    dhcp: bool = False
    match_mask: str | None = None
    match_value: str | None = None
    ipv6_address: str | None = None
    ipv6_mode: str | None = None

    def __post_init__(self) -> None:
        if self.network_type not in NETWORK_TYPES:
            raise exception.Invalid(reason=f"network type {self.network_type!r} of network {self.id}; "
                                           f"accepted: {', '.join(NETWORK_TYPES)}")
        bounds = SEGMENT_RANGES[self.network_type]
        if bounds is not None and not (isinstance(self.segmentation_id, int)
                                       and bounds[0] <= self.segmentation_id <= bounds[1]):
            raise exception.Invalid(reason=f"{self.network_type} network {self.id} has segmentation id "
                                           f"{self.segmentation_id!r}; accepted: {bounds[0]}-{bounds[1]}")
        if self.network_type == "flat" and not self.physical_bridge:
            raise exception.Invalid(reason=f"flat network {self.id} names no physical_bridge; "
                                           "accepted: the name of an existing bridge")
        _check_cidr(self.host_address, "host_address")
        _check_ip(self.match_mask, "match_mask")
        _check_ip(self.match_value, "match_value")
        if self.dhcp and not self.host_address:
            raise exception.Invalid(reason=f"network {self.id} asks for DHCP without a host_address "
                                           "for the DHCP server")
        _check_ipv6(self.ipv6_address, "ipv6_address", with_prefix=True)
        if self.ipv6_mode is not None:
            if self.ipv6_mode not in ipv6.MODES:
                raise exception.Invalid(reason=f"ipv6_mode {self.ipv6_mode!r} of network {self.id}; "
                                               f"accepted: {', '.join(ipv6.MODES)}")
            if not self.ipv6_address or self.network_type == "routed":
                raise exception.Invalid(reason=f"network {self.id} asks for IPv6 mode {self.ipv6_mode!r} without "
                                               "an ipv6_address on a bridge for its router advertisements")

    @property
    def l2(self) -> bool:
        return self.network_type != "routed"


@dataclasses.dataclass(frozen=True)
class EndpointSpec(_Spec):
    """An endpoint plugged on this host: a guest's tap, or a veth into a namespace.

    ``address`` is the endpoint's IPv4 address (no prefix): the DHCP entry of
    L2 networks, the /32 route of routed ones.
    """

    id: str
    network_id: str
    mac: str
    address: str | None = None
    kind: str = "tap"
    netns: str | None = None
    ifname: str = "eth0"
    address6: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ENDPOINT_KINDS:
            raise exception.Invalid(reason=f"endpoint kind {self.kind!r}; accepted: {', '.join(ENDPOINT_KINDS)}")
        if self.kind == "veth" and not self.netns:
            raise exception.Invalid(reason=f"veth endpoint {self.id} names no netns to put its peer in")
        parts = self.mac.split(":")
        if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p)
                                      for p in parts):
            raise exception.Invalid(reason=f"MAC address {self.mac!r}; accepted: six hex pairs "
                                           "separated by ':'")
        _check_ip(self.address, "endpoint address")
        _check_ipv6(self.address6, "endpoint IPv6 address")


@dataclasses.dataclass(frozen=True)
class HostSpec(_Spec):
    """Another host of the topology: its tunnel (underlay) address and routed block."""

    name: str
    tunnel_address: str
    block: str | None = None

    def __post_init__(self) -> None:
        _check_ip(self.tunnel_address, "tunnel_address")
        if self.block is not None:
            try:
                ipaddress.IPv4Network(self.block)
            except ValueError:
                raise exception.Invalid(reason=f"host block {self.block!r} of {self.name} is not a "
                                               "network (e.g. 10.1.0.0/24)") from None


@dataclasses.dataclass(frozen=True)
class RoutedSpec(_Spec):
    """This host's routed-mode layout: its gateway address, its block and the datacenter prefix."""

    gateway: str
    block: str
    datacenter: str

    def __post_init__(self) -> None:
        _check_ip(self.gateway, "gateway")
        for value, what in ((self.block, "block"), (self.datacenter, "datacenter prefix")):
            try:
                ipaddress.IPv4Network(value)
            except ValueError:
                raise exception.Invalid(reason=f"routed {what} {value!r} is not a network") from None


def _check_prefixlen(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 32:
        raise exception.Invalid(reason=f"{what} {value!r}; accepted: 1-32")


@dataclasses.dataclass(frozen=True)
class FloatingSpec(_Spec):
    """A floating address translated to an endpoint's fixed address.

    ``physical_network`` (its external network's ``provider:physical_network``) and
    ``prefixlen`` (of the external subnet it is taken from) say where it lives: a host
    whose ``[network] external_interfaces`` maps that physical network puts the address,
    with that prefix length, on the mapped interface (see :mod:`fabric.network.edge`).
    """

    address: str
    fixed_address: str
    physical_network: str | None = None
    prefixlen: int = 32

    def __post_init__(self) -> None:
        _check_ip(self.address, "floating address")
        _check_ip(self.fixed_address, "fixed address")
        _check_prefixlen(self.prefixlen, f"prefix length of floating address {self.address}")


@dataclasses.dataclass(frozen=True)
class RouterSpec(_Spec):
    """A router as one host realises it with its own gateway and NAT: forwarding between the
    bridges of ``networks`` (its legs this host carries), and, given ``snat_address`` (its
    gateway's address), traffic from ``subnets`` leaving fabric's devices translated to it.
    ``physical_network`` and ``snat_prefixlen`` place the gateway address on the host's
    external interface as for :class:`FloatingSpec`."""

    id: str
    networks: list[str] = dataclasses.field(default_factory=list)
    subnets: list[str] = dataclasses.field(default_factory=list)
    snat_address: str | None = None
    physical_network: str | None = None
    snat_prefixlen: int = 32

    def __post_init__(self) -> None:
        for cidr in self.subnets:
            _check_cidr(cidr, f"subnet of router {self.id}")
        _check_ip(self.snat_address, f"SNAT address of router {self.id}")
        _check_prefixlen(self.snat_prefixlen, f"prefix length of the SNAT address of router {self.id}")


@dataclasses.dataclass
class HostState:
    """Everything one host's data plane should hold."""

    networks: dict[str, NetworkSpec] = dataclasses.field(default_factory=dict)
    endpoints: dict[str, EndpointSpec] = dataclasses.field(default_factory=dict)
    remote_hosts: dict[str, HostSpec] = dataclasses.field(default_factory=dict)
    floating: dict[str, FloatingSpec] = dataclasses.field(default_factory=dict)
    routed: RoutedSpec | None = None
    routers: dict[str, RouterSpec] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "networks": [n.to_dict() for n in self.networks.values()],
            "endpoints": [e.to_dict() for e in self.endpoints.values()],
            "remote_hosts": [h.to_dict() for h in self.remote_hosts.values()],
            "floating": [f.to_dict() for f in self.floating.values()],
            "routed": self.routed.to_dict() if self.routed else None,
            "routers": [r.to_dict() for r in self.routers.values()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HostState:
        state = cls()
        for item in data.get("networks", []):
            spec = NetworkSpec.from_dict(item)
            state.networks[spec.id] = spec
        for item in data.get("endpoints", []):
            spec = EndpointSpec.from_dict(item)
            state.endpoints[spec.id] = spec
        for item in data.get("remote_hosts", []):
            spec = HostSpec.from_dict(item)
            state.remote_hosts[spec.name] = spec
        for item in data.get("floating", []):
            spec = FloatingSpec.from_dict(item)
            state.floating[spec.address] = spec
        if data.get("routed"):
            state.routed = RoutedSpec.from_dict(data["routed"])
        for item in data.get("routers", []):
            spec = RouterSpec.from_dict(item)
            state.routers[spec.id] = spec
        return state

    def endpoints_of(self, network_id: str) -> list[EndpointSpec]:
        return [e for e in self.endpoints.values() if e.network_id == network_id]


def segment_match(layout: Any, tenant: int, segment: int) -> tuple[str, str]:
    """(match_mask, match_value) of a routed network for a :class:`fabric.ipam.layout.Layout`:
    the tenant and segment bits of its addresses, whatever the host and endpoint bits.
    """
    layout.check("tenant", tenant)
    layout.check("segment", segment)
    shift = layout.endpoint_bits
    mask = ((1 << (layout.tenant_bits + layout.segment_bits)) - 1) << shift
    value = ((tenant << layout.segment_bits) | segment) << shift
    return str(ipaddress.IPv4Address(mask)), str(ipaddress.IPv4Address(value))
