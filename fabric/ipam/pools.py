"""Pool definitions: which addresses a pool hands out, and in which order.

A pool is a sorted list of disjoint address ranges. Each allocatable address
has an *ordinal*, its position in those ranges (0 is the lowest address);
the allocator works on ordinals, so "lowest free first" is "smallest free
ordinal". A classic subnet pool's ranges are its allocation ranges minus its
gateway and reserved addresses; a routed segment's pool is the endpoint part
of its block on one host (offsets 2 and up).

:func:`validate_subnet` is the one home of the subnet rules: it checks a
subnet's CIDR, gateway, allocation ranges and reserved addresses and returns
them normalised. The Network API (:mod:`fabric.api.network`) imports it
through :mod:`fabric.ipam.api` and runs it in-process before it writes a
subnet row, so a subnet this module would refuse is answered 400 with nothing
stored; :func:`subnet_pool` runs it again on the stored row, and :func:`move_gateway` on
a stored row whose gateway moves (the ranges stay, only the excluded gateway changes). Overlapping CIDRs
in different subnets are allowed here: every subnet is a pool of its own (the
API refuses overlapping subnets on one network).
"""

from __future__ import annotations

import bisect
import dataclasses
import ipaddress
from typing import Any

from fabric.exception import Conflict, Invalid, InvalidAddress

#: Ordinals are stored as signed 64-bit integers; a pool offers at most this many
#: (an IPv6 /64 offers far more than anyone allocates).
ORDINAL_LIMIT = 1 << 62

_AUTO = "auto"

#: ``AddressPool.kind`` and the ``kind`` of a pool's info: a classic subnet's pool,
#: or a routed segment's block on one host.
SUBNET_POOL = "subnet"
SEGMENT_POOL = "segment"


def address_text(value: int, version: int) -> str:
    """The canonical text of an address given as an integer."""
    return str(ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value))


def _address_value(text: str) -> int:
    return int(ipaddress.ip_address(text))


@dataclasses.dataclass(frozen=True)
class PoolDefinition:
    """The allocatable ranges of one pool, with the ordinal <-> address mapping."""

    pool_id: str
    version: int
    ranges: tuple[tuple[int, int], ...]
    #: Addresses a caller may ask for explicitly even outside ``ranges`` (a subnet's
    #: CIDR hosts); ``None``: only addresses inside ``ranges``.
    span: tuple[int, int] | None = None
    excluded: frozenset[int] = frozenset()
    #: What callers get with every allocation of the pool (cidr, gateway, prefixlen ...).
    info: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, hash=False)
    _starts: tuple[int, ...] = dataclasses.field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        starts, total = [], 0
        for first, last in self.ranges:
            starts.append(total)
            total += last - first + 1
        object.__setattr__(self, "_starts", tuple(starts))
        object.__setattr__(self, "_size", total)

    @property
    def size(self) -> int:
        """How many addresses the ranges hold."""
        return self._size  # type: ignore[attr-defined]

    @property
    def limit(self) -> int:
        """How many ordinals the allocator may hand out (size, capped to fit a BIGINT)."""
        return min(self.size, ORDINAL_LIMIT)

    def address(self, ordinal: int) -> str:
        """The address text of ``ordinal`` (0 <= ordinal < size)."""
        index = bisect.bisect_right(self._starts, ordinal) - 1
        first, _ = self.ranges[index]
        return address_text(first + ordinal - self._starts[index], self.version)

    def ordinal(self, address: int) -> int | None:
        """The ordinal of an address (as an integer), or None when outside the ranges."""
        index = bisect.bisect_right([first for first, _ in self.ranges], address) - 1
        if index < 0:
            return None
        first, last = self.ranges[index]
        if address > last:
            return None
        return self._starts[index] + address - first

    def check_explicit(self, address: Any) -> tuple[str, int | None]:
        """Canonical text and ordinal of an address a caller asks for by name.

        Raises InvalidAddress when it is not an address of this pool (wrong family,
        outside the pool, the gateway or a reserved address).
        """
        try:
            parsed = ipaddress.ip_address(address.strip() if isinstance(address, str) else address)
        except ValueError:
            raise InvalidAddress(address=address, pool=self.pool_id, reason="not an IP address") from None
        if parsed.version != self.version:
            raise InvalidAddress(address=address, pool=self.pool_id,
                                 reason=f"the pool holds IPv{self.version} addresses")
        value = int(parsed)
        if value in self.excluded:
            raise InvalidAddress(address=address, pool=self.pool_id,
                                 reason="it is the gateway or a reserved address")
        ordinal = self.ordinal(value)
        if ordinal is None:
            low, high = self.span or (self.ranges[0][0], self.ranges[-1][1])
            if self.span is None or not low <= value <= high:
                raise InvalidAddress(address=address, pool=self.pool_id,
                                     reason=f"accepted: {address_text(low, self.version)} to {address_text(high, self.version)}")
        return str(parsed), ordinal

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "ranges": [[address_text(first, self.version), address_text(last, self.version)] for first, last in self.ranges],
            "span": [address_text(v, self.version) for v in self.span] if self.span else None,
            "excluded": sorted(address_text(v, self.version) for v in self.excluded),
            "info": self.info,
        }

    @classmethod
    def from_json(cls, pool_id: str, data: dict[str, Any]) -> PoolDefinition:
        num = _address_value
        span = data.get("span")
        return cls(pool_id, int(data["version"]),
                   tuple((num(a), num(b)) for a, b in data["ranges"]),
                   (num(span[0]), num(span[1])) if span else None,
                   frozenset(num(v) for v in data.get("excluded", ())), dict(data.get("info") or {}))


def _subtract(ranges: list[tuple[int, int]], points: set[int]) -> list[tuple[int, int]]:
    """``ranges`` with every address in ``points`` cut out."""
    result = []
    for first, last in ranges:
        cuts = sorted(p for p in points if first <= p <= last)
        for point in cuts:
            if first <= point - 1:
                result.append((first, point - 1))
            first = point + 1
        if first <= last:
            result.append((first, last))
    return result


def _address_in(network, value: Any, what: str, cidr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        parsed = ipaddress.ip_address(value.strip() if isinstance(value, str) else value)
    except (ValueError, AttributeError):
        raise Invalid(reason=f"{what} {value!r} is not an IP address") from None
    if parsed.version != network.version or parsed not in network:
        raise Invalid(reason=f"{what} {value} is not inside the subnet {cidr}")
    return parsed


@dataclasses.dataclass(frozen=True)
class SubnetSpec:
    """A validated subnet: what the API stores and the pool is built from."""

    cidr: str
    ip_version: int
    gateway_ip: str | None
    allocation_pools: list[dict[str, str]]
    reserved: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def validate_subnet(cidr: Any, gateway_ip: Any = _AUTO, allocation_pools: Any = None,
                    reserved: Any = None, ip_version: Any = None, *,
                    gateway_in_pools: bool = False) -> SubnetSpec:
    """Check a subnet and return it normalised.

    ``gateway_ip``: an address inside the CIDR, ``None`` for no gateway, or
    ``"auto"`` (default: the first host address). ``allocation_pools``: a list
    of ``{"start": a, "end": b}`` (or ``[a, b]``) of host addresses of the CIDR
    (never its network or IPv4 broadcast address, never the gateway), not
    overlapping; default: every host address but the gateway. ``gateway_in_pools``
    accepts ranges that hold the gateway (stored rows from before that rule). The gateway and reserved addresses are
    never handed out, even inside a range. Raises Invalid naming the bad value
    and what is accepted; pure (no database, no RPC), so the API runs it
    in-process before it writes a subnet.
    """
    if not isinstance(cidr, str):
        raise Invalid(reason=f"cidr {cidr!r} is not a string; expected e.g. 10.0.0.0/24 or 2001:db8::/64")
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.ip_network(cidr.strip(), strict=False)
            raise Invalid(reason=f"cidr {cidr!r} has host bits set; did you mean {loose}?") from None
        raise Invalid(reason=f"cidr {cidr!r} is not a CIDR; expected e.g. 10.0.0.0/24 or 2001:db8::/64") from None
    if ip_version is not None and ip_version != network.version:
        raise Invalid(reason=f"ip_version {ip_version!r} does not match cidr {cidr} (IPv{network.version})")
    too_small = 30 if network.version == 4 else 126
    if network.prefixlen > too_small:
        raise Invalid(reason=f"cidr {cidr} is too small; accepted: prefix length up to /{too_small}")
    base, last = int(network.network_address), int(network.broadcast_address)
    # IPv4 keeps its network and broadcast addresses out; IPv6 its subnet-router anycast.
    host_first, host_last = base + 1, (last - 1 if network.version == 4 else last)

    gateway: int | None
    if gateway_ip == _AUTO:
        gateway = host_first
    elif gateway_ip is None or gateway_ip == "":
        gateway = None
    else:
        gateway = int(_address_in(network, gateway_ip, "gateway_ip", str(network)))
        if not host_first <= gateway <= host_last:
            raise Invalid(reason=f"gateway_ip {gateway_ip} is the network or broadcast address of {network}")

    ranges: list[tuple[int, int]] = []
    if allocation_pools:
        if not isinstance(allocation_pools, list):
            raise Invalid(reason=f"allocation_pools {allocation_pools!r} is not a list of {{start, end}}")
        for item in allocation_pools:
            if isinstance(item, dict) and set(item) == {"start", "end"}:
                start, end = item["start"], item["end"]
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                start, end = item
            else:
                raise Invalid(reason=f"allocation pool {item!r} is not {{'start': address, 'end': address}}")
            first = int(_address_in(network, start, "allocation pool start", str(network)))
            final = int(_address_in(network, end, "allocation pool end", str(network)))
            if first > final:
                raise Invalid(reason=f"allocation pool {start}-{end} ends before it starts")
            if first < host_first or final > host_last:
                raise Invalid(reason=(f"allocation pool {start}-{end} includes the network or broadcast address; "
                                      f"accepted: {address_text(host_first, network.version)} to {address_text(host_last, network.version)}"))
            if gateway is not None and first <= gateway <= final and not gateway_in_pools:
                # Neutron refuses this too: the pool would promise an address it never hands out.
                raise Invalid(reason=(f"allocation pool {start}-{end} contains the gateway_ip "
                                      f"{address_text(gateway, network.version)}; move the pool or the gateway"))
            ranges.append((first, final))
        ranges.sort()
        for (a_first, a_last), (b_first, b_last) in zip(ranges, ranges[1:], strict=False):
            if b_first <= a_last:
                raise Invalid(reason=(f"allocation pools {address_text(a_first, network.version)}-{address_text(a_last, network.version)} and "
                                      f"{address_text(b_first, network.version)}-{address_text(b_last, network.version)} overlap"))
    else:
        # The gateway is cut out of the default ranges so that the subnet shows the
        # addresses it hands out (as Neutron does); the pool is the same either way.
        ranges = _subtract([(host_first, host_last)], {gateway} if gateway is not None else set())

    reserved_values = []
    if reserved:
        if not isinstance(reserved, list):
            raise Invalid(reason=f"reserved {reserved!r} is not a list of addresses")
        reserved_values = sorted({int(_address_in(network, r, "reserved address", str(network))) for r in reserved})

    excluded = set(reserved_values) | ({gateway} if gateway is not None else set())
    if not _subtract(ranges, excluded):
        raise Invalid(reason=f"subnet {network} has no allocatable address left after the gateway and reserved addresses")
    version = network.version
    return SubnetSpec(
        cidr=str(network), ip_version=version,
        gateway_ip=address_text(gateway, version) if gateway is not None else None,
        allocation_pools=[{"start": address_text(a, version), "end": address_text(b, version)} for a, b in ranges],
        reserved=[address_text(v, version) for v in reserved_values],
    )


def move_gateway(cidr: str, gateway_ip: str | None, allocation_pools: Any, reserved: Any,
                 new_gateway: Any) -> SubnetSpec:
    """A stored subnet with its gateway moved to ``new_gateway`` (an address of the CIDR's hosts,
    or ``None`` for no gateway), normalised as :func:`validate_subnet` returns it.

    The pool's ordinals are positions in its ranges, so the ranges stay exactly as they are: a
    gateway outside the allocation pools moves without touching them (the old gateway may then
    be asked for by name, the new one never is handed out), and a row from before the gateway
    rule, whose pools still cover the old gateway, has it cut out of them. Raises Invalid (not
    an address of the subnet's hosts; Neutron's "auto" is a create-time value) and Conflict
    when the new gateway lies in an allocation pool (Neutron's
    GatewayConflictWithAllocationPools). Pure, like :func:`validate_subnet`.
    """
    current = validate_subnet(cidr, gateway_ip, allocation_pools or None, reserved or None, gateway_in_pools=True)
    network = ipaddress.ip_network(current.cidr)
    num = _address_value
    ranges = [(num(p["start"]), num(p["end"])) for p in current.allocation_pools]
    if current.gateway_ip is not None:
        ranges = _subtract(ranges, {num(current.gateway_ip)})
    if new_gateway is not None:
        if not isinstance(new_gateway, str) or new_gateway.strip() == _AUTO:
            raise Invalid(reason=f"gateway_ip {new_gateway!r} is not an IP address; accepted: an address of "
                                 f"{network} or null (no gateway)")
        value = int(_address_in(network, new_gateway, "gateway_ip", str(network)))
        for first, last in ranges:
            if first <= value <= last:
                raise Conflict(reason=(f"Gateway ip {new_gateway} conflicts with allocation pool "
                                       f"{address_text(first, network.version)}-{address_text(last, network.version)}."))
    pools = [{"start": address_text(a, network.version), "end": address_text(b, network.version)} for a, b in ranges]
    # validate_subnet checks the rest (network or broadcast address) and normalises; with no
    # pools left it would make default ones, so an emptied row is refused here.
    if not pools:
        raise Invalid(reason=f"subnet {network} would have no allocation pool left without its gateway "
                             f"{current.gateway_ip}")
    return validate_subnet(current.cidr, new_gateway, pools, current.reserved or None)


def subnet_pool(subnet_id: str, cidr: str, gateway_ip: str | None, allocation_pools: Any,
                reserved: Any) -> PoolDefinition:
    """The pool of a stored subnet (validated again: the row may predate a rule)."""
    # Rows stored before the gateway rule hold it in their default ranges; it is cut out below.
    spec = validate_subnet(cidr, gateway_ip, allocation_pools or None, reserved or None, gateway_in_pools=True)
    version = spec.ip_version
    network = ipaddress.ip_network(spec.cidr)
    num = _address_value
    excluded = {num(r) for r in spec.reserved}
    if spec.gateway_ip:
        excluded.add(num(spec.gateway_ip))
    ranges = _subtract([(num(p["start"]), num(p["end"])) for p in spec.allocation_pools], excluded)
    base, last = int(network.network_address), int(network.broadcast_address)
    span = (base + 1, last - 1 if version == 4 else last)
    info = {"kind": SUBNET_POOL, "subnet_id": subnet_id, "cidr": spec.cidr, "prefixlen": network.prefixlen,
            "gateway": spec.gateway_ip, "ip_version": version}
    return PoolDefinition(subnet_id, version, tuple(ranges), span, frozenset(excluded), info)


def segment_pool(pool_id: str, version: int, first: int, last: int, info: dict[str, Any]) -> PoolDefinition:
    """The endpoint pool of one segment block on one host."""
    return PoolDefinition(pool_id, version, ((first, last),), info=info)
