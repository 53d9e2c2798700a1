"""IPv6 subnets: their address and router-advertisement modes (Neutron's values and rules,
their one home) and the addresses guests take by SLAAC.

- ``slaac``: router advertisements carry the prefix with the autonomous flag; a guest makes
  its address from the prefix and its MAC (EUI-64), so fabric derives it the same way
  (:func:`slaac_address`) and never allocates it.
- ``dhcpv6-stateless``: the same addresses, plus DHCPv6 for other configuration.
- ``dhcpv6-stateful``: the advertisements say "managed"; a guest asks DHCPv6, which hands out
  the address IPAM allocated to its port (by MAC).

The address a port holds on an IPv6 subnet, whatever the mode, is in its anti-spoofing set
and in the sets of the security groups it belongs to (see :mod:`fabric.network.secgroups`).
"""

from __future__ import annotations

import ipaddress

from fabric import exception

MODES = ("slaac", "dhcpv6-stateful", "dhcpv6-stateless")
#: Modes where a guest makes its own address from the prefix and its MAC.
AUTO_ADDRESS = ("slaac", "dhcpv6-stateless")
#: The only prefix length EUI-64 addresses fit.
AUTO_PREFIXLEN = 64


def check_modes(ip_version: int, cidr: str | None, address_mode: str | None, ra_mode: str | None,
                enable_dhcp: bool) -> None:
    """Raise Invalid, naming the bad value, unless the modes may be set on such a subnet (as Neutron
    rules): known values, IPv6 only, equal when both are given, DHCP enabled, and a /64 for the
    modes where guests make their own address."""
    for field, value in (("ipv6_address_mode", address_mode), ("ipv6_ra_mode", ra_mode)):
        if value is not None and value not in MODES:
            raise exception.Invalid(reason=f"subnet.{field} {value!r}; accepted: {', '.join(MODES)}")
        if value is not None and ip_version != 6:
            raise exception.Invalid(reason=f"subnet.{field} {value!r} is for IPv6 subnets only (ip_version 6), "
                                           f"not ip_version {ip_version}")
    if address_mode is not None and ra_mode is not None and address_mode != ra_mode:
        raise exception.Invalid(reason=f"ipv6_ra_mode set to {ra_mode!r} with ipv6_address_mode set to "
                                       f"{address_mode!r} is not valid; if both are set, they must be the same value")
    if (address_mode or ra_mode) and not enable_dhcp:
        raise exception.Invalid(reason=f"ipv6_address_mode {address_mode!r} / ipv6_ra_mode {ra_mode!r} cannot be "
                                       "set when enable_dhcp is false")
    mode = served_mode(address_mode, ra_mode)
    if mode in AUTO_ADDRESS and cidr is not None and ipaddress.ip_network(cidr, strict=False).prefixlen != AUTO_PREFIXLEN:
        raise exception.Invalid(reason=f"subnet.cidr {cidr} cannot take ipv6 mode {mode!r}: guests make EUI-64 "
                                       f"addresses, which need a /{AUTO_PREFIXLEN}")


def served_mode(address_mode: str | None, ra_mode: str | None) -> str | None:
    """The mode the hosts serve for a subnet with these modes (None: no RA, no DHCPv6)."""
    return address_mode or ra_mode


def allocated_subnets(subnets: list) -> list:
    """The subnets a port takes an address from when it names none, among ``subnets`` (a network's,
    oldest first; anything with ``ip_version``, ``ipv6_address_mode`` and ``ipv6_ra_mode``): its first
    IPv4 subnet and its first IPv6 one whose addresses are allocated (DHCPv6-stateful, or no mode
    at all: Neutron allocates there too, and the guest is told its address some other way), each
    when there is one, in that order. Addresses on SLAAC and DHCPv6-stateless subnets are the
    EUI-64 of the port's MAC, never allocated; a network with only those gives an empty list."""
    first4 = next((s for s in subnets if s.ip_version == 4), None)
    first6 = next((s for s in subnets if s.ip_version == 6
                   and served_mode(s.ipv6_address_mode, s.ipv6_ra_mode) not in AUTO_ADDRESS), None)
    return [s for s in (first4, first6) if s is not None]


def advertised(subnets: list) -> bool:
    """True when one of ``subnets`` is an IPv6 subnet with a mode: its network's hosts send router
    advertisements for it (and need their DHCP port there, whose MAC makes their address)."""
    return any(s.ip_version == 6 and served_mode(s.ipv6_address_mode, s.ipv6_ra_mode) is not None for s in subnets)


def slaac_address(cidr: str, mac: str) -> str:
    """The address a guest with ``mac`` makes on /64 ``cidr`` (the prefix, then the EUI-64 of the MAC)."""
    octets = [int(p, 16) for p in mac.split(":")]
    octets[0] ^= 0x02  # the universal/local bit, inverted (RFC 4291, appendix A)
    interface_id = int.from_bytes(bytes(octets[:3] + [0xFF, 0xFE] + octets[3:]), "big")
    network = ipaddress.IPv6Network(cidr, strict=False)
    return str(network.network_address + interface_id)
