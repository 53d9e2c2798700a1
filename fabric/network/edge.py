"""The edge of the network: which external addresses go on which of the host's interfaces.

A host maps physical networks to its interfaces (``[network] external_interfaces =
public:eth1``). Every floating address and router gateway (SNAT) address of an external
network whose physical network is mapped is put on the mapped interface, with the
external subnet's prefix length: the host is then an ordinary neighbour holding those
addresses on the external segment (it answers ARP for them, and reaches the outside
on-link), so nothing outside needs a route to the host. fabric's NAT table
(:mod:`fabric.network.nat`) translates them as before. Addresses fabric puts there are
marked (proto :data:`~fabric.network.kernel.RTPROT_FABRIC`) so the administrator's own
addresses on the interface are never touched.
"""

from __future__ import annotations

from fabric import exception
from fabric.network.kernel import check_name
from fabric.network.model import HostState

OPTION = "external_interfaces"


def interface_map(raw: str) -> dict[str, str]:
    """``"public:eth1,dmz:eth2"`` -> ``{"public": "eth1", "dmz": "eth2"}``.

    Raises InvalidSetting naming the bad pair.
    """
    mapping: dict[str, str] = {}
    for pair in (p.strip() for p in raw.split(",")):
        if not pair:
            continue
        physical, sep, interface = (part.strip() for part in pair.partition(":"))
        problem = None
        if not sep or not physical or not interface:
            problem = f"{pair!r} is not physical_network:interface"
        elif physical in mapping:
            problem = f"physical network {physical!r} is mapped twice"
        else:
            try:
                check_name(interface)
            except exception.Invalid as exc:
                problem = exc.message
        if problem:
            raise exception.InvalidSetting(source="settings", section="network", option=OPTION, value=raw,
                                           reason=f"{problem}; accepted: physical_network:interface pairs "
                                                  "separated by ',' (public:eth1,dmz:eth2)")
        mapping[physical] = interface
    return mapping


def wanted_addresses(mapping: dict[str, str], state: HostState) -> dict[str, set[str]]:
    """Interface -> the CIDRs fabric must hold on it for ``state`` (every mapped interface
    appears, with an empty set when nothing of it is in use: its leftovers go)."""
    wanted: dict[str, set[str]] = {interface: set() for interface in mapping.values()}
    for floating in state.floating.values():
        if floating.physical_network in mapping:
            wanted[mapping[floating.physical_network]].add(f"{floating.address}/{floating.prefixlen}")
    for router in state.routers.values():
        if router.snat_address and router.physical_network in mapping:
            wanted[mapping[router.physical_network]].add(f"{router.snat_address}/{router.snat_prefixlen}")
    return wanted
