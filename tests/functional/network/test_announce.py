"""Gratuitous ARP on the real kernel: a neighbour holding a stale entry for an address learns
its new MAC as soon as the host plugs the port or puts the address on its external interface,
without sending any traffic first."""

from __future__ import annotations

from fabric.network.model import EndpointSpec, FloatingSpec, NetworkSpec
from tests.fixtures.netns import in_ns, mac_of
from tests.fixtures.processes import wait_until
from tests.functional.network.test_edge import FIXED, FLOATING, external_segment

NET = NetworkSpec(id="net-ga", network_type="vxlan", segmentation_id=313, host_address="10.33.0.1/24")
#: The MAC a neighbour wrongly remembers (the address's previous holder).
OLD_MAC = "02:de:ad:00:00:01"


def remembered(ns: str, address: str, ifname: str) -> str | None:
    """The MAC ``ns``'s neighbour table holds for ``address`` on ``ifname`` (None without one)."""
    shown = in_ns(ns, "ip", "neigh", "show", address, "dev", ifname).stdout
    return shown.split("lladdr ")[1].split()[0] if "lladdr " in shown else None


def stale_entry(ns: str, address: str, ifname: str) -> None:
    """``ns`` remembers ``address`` at :data:`OLD_MAC` (stale: kept until traffic would probe it)."""
    in_ns(ns, "ip", "neigh", "replace", address, "lladdr", OLD_MAC, "dev", ifname, "nud", "stale")
    assert remembered(ns, address, ifname) == OLD_MAC


def test_a_plugged_port_is_announced_to_its_neighbours(netns, simulated_host):
    h1 = netns("h1")
    driver = simulated_host(h1, "h1", "192.168.82.1")
    driver.setup_network(NET)
    neighbour, guest = netns("n"), netns("g")
    driver.plug(EndpointSpec("ep-n", NET.id, "02:00:00:00:3a:01", address="10.33.0.11", kind="veth",
                             netns=neighbour))
    netns.configure_endpoint(neighbour, "10.33.0.11/24")
    # The neighbour knew 10.33.0.12 from a port that has gone; IPAM hands the address to a new port.
    stale_entry(neighbour, "10.33.0.12", "eth0")

    driver.plug(EndpointSpec("ep-g", NET.id, "02:00:00:00:3a:02", address="10.33.0.12", kind="veth", netns=guest))
    assert wait_until(lambda: remembered(neighbour, "10.33.0.12", "eth0") == "02:00:00:00:3a:02", timeout=5,
                      what="the neighbour's entry for the new port")


def test_a_floating_address_put_on_the_external_interface_is_announced(netns, simulated_host):
    h1, ep = netns("h1"), netns("ep")
    outside = external_segment(netns, h1)
    driver = simulated_host(h1, "h1", "192.168.83.1", external_interfaces="public:ext0")
    driver.setup_network(NET)
    driver.plug(EndpointSpec("ep-f", NET.id, "02:00:00:00:3a:03", address=FIXED, kind="veth", netns=ep))
    # The outside knew the floating address at another host's MAC (it was associated there before).
    stale_entry(outside, FLOATING, "up0")

    driver.associate_floating(FloatingSpec(FLOATING, FIXED, physical_network="public", prefixlen=24))
    assert wait_until(lambda: remembered(outside, FLOATING, "up0") == mac_of(h1, "ext0"), timeout=5,
                      what="the outside's entry for the floating address")
