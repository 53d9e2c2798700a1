"""Romana's layer-3 tenancy addressing: the pure bit arithmetic.

An endpoint address is ``prefix | host | tenant | segment | endpoint``: the
datacenter prefix in the top bits, then the host number, the tenant number,
the segment number and the endpoint offset, each in a field of fixed width.
The widths fill the address exactly, so every host owns one aggregatable
block (``prefix | host`` followed by zeros), every (host, tenant, segment)
one block of ``2**endpoint_bits`` offsets. Within each segment block the
first two offsets are reserved: offset 0 is the segment's gateway on that
host, offset 1 its DHCP/service address; endpoints start at offset 2.

Nothing here touches a database; :class:`Layout` is a frozen value that
validates itself when built and checks every number against its width.
It works the same for IPv4 and IPv6 prefixes.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from fabric.exception import LayoutInvalid, NumberOutOfRange

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Offset of the segment gateway within each segment block.
GATEWAY_OFFSET = 0
#: Offset of the DHCP/service address within each segment block.
SERVICE_OFFSET = 1
#: First offset handed out to endpoints.
FIRST_ENDPOINT_OFFSET = 2

FIELDS = ("host", "tenant", "segment", "endpoint")


def parse_prefix(prefix: Any) -> IPNetwork:
    """The datacenter prefix as a network; raises LayoutInvalid naming the bad value."""
    if not isinstance(prefix, str):
        raise LayoutInvalid(reason=f"prefix {prefix!r} is not a string; expected a CIDR such as 10.0.0.0/8 or fd00::/48")
    try:
        return ipaddress.ip_network(prefix.strip(), strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            loose = ipaddress.ip_network(prefix.strip(), strict=False)
            raise LayoutInvalid(reason=f"prefix {prefix!r} has host bits set; expected a network address such as {loose}") from None
        raise LayoutInvalid(reason=f"prefix {prefix!r} is not a CIDR; expected e.g. 10.0.0.0/8 or fd00::/48") from None


def _width(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LayoutInvalid(reason=f"{name}_bits {value!r} is not an integer; expected a whole number of bits >= {minimum}")
    if value < minimum:
        why = " (two offsets per segment are reserved, so at least one endpoint needs 2 bits)" if name == "endpoint" else ""
        raise LayoutInvalid(reason=f"{name}_bits {value} is too small; expected >= {minimum}{why}")
    return value


@dataclasses.dataclass(frozen=True)
class Layout:
    """A validated datacenter address layout.

    Build with :meth:`build` (which validates); raises LayoutInvalid when the
    prefix is not a network address or the widths do not fill the address.
    """

    prefix: IPNetwork
    host_bits: int
    tenant_bits: int
    segment_bits: int
    endpoint_bits: int

    @classmethod
    def build(cls, prefix: Any, host_bits: Any, tenant_bits: Any, segment_bits: Any,
              endpoint_bits: Any) -> Layout:
        """Validate and build a layout; the error shows the bit sum when it is wrong."""
        network = parse_prefix(prefix)
        widths = {
            "host": _width("host", host_bits, 0),
            "tenant": _width("tenant", tenant_bits, 0),
            "segment": _width("segment", segment_bits, 0),
            "endpoint": _width("endpoint", endpoint_bits, FIRST_ENDPOINT_OFFSET),
        }
        total = network.prefixlen + sum(widths.values())
        if total != network.max_prefixlen:
            terms = " + ".join(f"{name} {bits}" for name, bits in widths.items())
            raise LayoutInvalid(
                reason=(f"prefix /{network.prefixlen} + {terms} = {total} bits, but an IPv{network.version} "
                        f"address has {network.max_prefixlen}; the widths must fill the address exactly"))
        return cls(network, widths["host"], widths["tenant"], widths["segment"], widths["endpoint"])

    # --- widths and capacities ------------------------------------------------

    @property
    def version(self) -> int:
        return self.prefix.version

    def bits(self, field: str) -> int:
        return getattr(self, f"{field}_bits")

    def capacity(self, field: str) -> int:
        """How many numbers ``field`` has room for (endpoints: offsets minus the reserved two)."""
        if field == "endpoint":
            return (1 << self.endpoint_bits) - FIRST_ENDPOINT_OFFSET
        return 1 << self.bits(field)

    def check(self, field: str, number: Any) -> int:
        """``number`` if it fits ``field``'s width; else NumberOutOfRange naming both."""
        bits = self.bits(field)
        high = (1 << bits) - 1
        if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= high:
            raise NumberOutOfRange(kind=field, number=number, bits=bits, high=high)
        return number

    # --- numbers to addresses and blocks --------------------------------------

    def _shift(self, field: str) -> int:
        below = FIELDS[FIELDS.index(field) + 1:]
        return sum(self.bits(name) for name in below)

    def encode(self, host: int, tenant: int, segment: int, endpoint: int) -> IPAddress:
        """The address of (host, tenant, segment, endpoint offset); each checked against its width."""
        value = int(self.prefix.network_address)
        for field, number in zip(FIELDS, (host, tenant, segment, endpoint), strict=True):
            value |= self.check(field, number) << self._shift(field)
        return ipaddress.ip_address(value) if self.version == 4 else ipaddress.IPv6Address(value)

    def decode(self, address: Any) -> tuple[int, int, int, int]:
        """(host, tenant, segment, endpoint offset) of an address inside the prefix.

        Raises LayoutInvalid when the address is not an address of this prefix.
        """
        try:
            parsed = ipaddress.ip_address(address)
        except ValueError:
            raise LayoutInvalid(reason=f"address {address!r} is not an IP address") from None
        if parsed.version != self.version or parsed not in self.prefix:
            raise LayoutInvalid(reason=f"address {address} is not inside the datacenter prefix {self.prefix}")
        offset = int(parsed) - int(self.prefix.network_address)
        return tuple((offset >> self._shift(field)) & ((1 << self.bits(field)) - 1) for field in FIELDS)

    def _block(self, length: int, host: int, tenant: int = 0, segment: int = 0) -> IPNetwork:
        first = self.encode(host, tenant, segment, 0)
        return ipaddress.ip_network(f"{first}/{length}")

    def host_block(self, host: int) -> IPNetwork:
        """The one aggregatable route of ``host``: every address of every tenant on it."""
        return self._block(self.prefix.prefixlen + self.host_bits, host)

    def tenant_block(self, host: int, tenant: int) -> IPNetwork:
        """``tenant``'s addresses on ``host``."""
        return self._block(self.prefix.prefixlen + self.host_bits + self.tenant_bits, host, tenant)

    def segment_block(self, host: int, tenant: int, segment: int) -> IPNetwork:
        """The block of one segment on one host (gateway, service, endpoints)."""
        length = self.prefix.max_prefixlen - self.endpoint_bits
        return self._block(length, host, tenant, segment)

    def gateway(self, host: int, tenant: int, segment: int) -> IPAddress:
        """The segment's gateway address on ``host`` (offset 0 of its block)."""
        return self.encode(host, tenant, segment, GATEWAY_OFFSET)

    def service_address(self, host: int, tenant: int, segment: int) -> IPAddress:
        """The segment's DHCP/service address on ``host`` (offset 1 of its block)."""
        return self.encode(host, tenant, segment, SERVICE_OFFSET)

    def host_gateway(self, host: int) -> IPAddress:
        """The host's own gateway address: the gateway of tenant 0, segment 0 on it."""
        return self.gateway(host, 0, 0)

    def endpoint_range(self, host: int, tenant: int, segment: int) -> tuple[int, int]:
        """First and last endpoint address (as integers) of a segment block."""
        first = int(self.encode(host, tenant, segment, FIRST_ENDPOINT_OFFSET))
        return first, first + self.capacity("endpoint") - 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefix": str(self.prefix), "ip_version": self.version,
            "host_bits": self.host_bits, "tenant_bits": self.tenant_bits,
            "segment_bits": self.segment_bits, "endpoint_bits": self.endpoint_bits,
            "hosts": self.capacity("host"), "tenants": self.capacity("tenant"),
            "segments": self.capacity("segment"), "endpoints_per_segment": self.capacity("endpoint"),
        }
