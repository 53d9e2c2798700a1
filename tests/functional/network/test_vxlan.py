"""VXLAN networks across two simulated hosts joined by a veth underlay."""

from __future__ import annotations

from fabric.network.model import EndpointSpec, HostSpec, NetworkSpec
from tests.fixtures.netns import isolated, mac_of, ping, ping_eventually

NET_A = NetworkSpec(id="net-a", network_type="vxlan", project_id="tenant-a", segmentation_id=100)
NET_B = NetworkSpec(id="net-b", network_type="vxlan", project_id="tenant-b", segmentation_id=200)


def test_vxlan_endpoints_reach_each_other_and_not_other_tenants(netns, simulated_host):
    h1, h2 = netns("h1"), netns("h2")
    netns.underlay(h1, h2, "192.168.77.1", "192.168.77.2")
    d1 = simulated_host(h1, "h1", "192.168.77.1")
    d2 = simulated_host(h2, "h2", "192.168.77.2")
    d1.set_remote_hosts([HostSpec("h2", "192.168.77.2")])
    d2.set_remote_hosts([HostSpec("h1", "192.168.77.1"), HostSpec("h2", "192.168.77.2")])
    for driver in (d1, d2):
        driver.setup_network(NET_A)
        driver.setup_network(NET_B)

    a1, a2, b1, b2 = netns("a1"), netns("a2"), netns("b1"), netns("b2")
    d1.plug(EndpointSpec("ep-a1", "net-a", "02:00:00:00:0a:01", kind="veth", netns=a1))
    d2.plug(EndpointSpec("ep-a2", "net-a", "02:00:00:00:0a:02", kind="veth", netns=a2))
    d1.plug(EndpointSpec("ep-b1", "net-b", "02:00:00:00:0b:01", kind="veth", netns=b1))
    d2.plug(EndpointSpec("ep-b2", "net-b", "02:00:00:00:0b:02", kind="veth", netns=b2))
    # Same subnet on purpose: only the L2 separation keeps the tenants apart.
    address = {a1: "10.10.0.11", a2: "10.10.0.12", b1: "10.10.0.21", b2: "10.10.0.22"}
    for ns, ip in address.items():
        netns.configure_endpoint(ns, f"{ip}/24")
    assert mac_of(a1) == "02:00:00:00:0a:01" and mac_of(b2) == "02:00:00:00:0b:02"

    # Every endpoint is alive and reachable on its own network, across the hosts, first.
    assert ping_eventually(a1, address[a2]) and ping_eventually(a2, address[a1])
    assert ping_eventually(b1, address[b2]) and ping_eventually(b2, address[b1])
    # Then the other tenant's endpoints, on the other host (both ways) and on the same one:
    # frames sent straight to their MACs, no ARP to wait for, never arrive.
    for src, dst in ((a1, b2), (b2, a1), (a1, b1)):
        assert isolated(src, dst, address[src], address[dst]), f"{src} reached {dst} on another network"
    # The pinned entries did not disturb the tenants' own paths.
    assert ping(a1, address[a2], count=2) and ping(b2, address[b1], count=2)

    described = d1.describe()
    assert described["networks"]["net-a"]["flood_to"] == ["192.168.77.2"]
    assert d2.describe()["networks"]["net-a"]["flood_to"] == ["192.168.77.1"]  # itself ignored
    # Plugging again changes nothing (idempotent), and the endpoint still works.
    links_before = d1.kernel.links("fab")
    d1.plug(EndpointSpec("ep-a1", "net-a", "02:00:00:00:0a:01", kind="veth", netns=a1))
    d1.setup_network(NET_A)
    assert d1.kernel.links("fab") == links_before
    assert ping(a1, "10.10.0.12")


def test_host_left_removes_its_flood_entry(netns, simulated_host):
    h1 = netns("h1")
    d1 = simulated_host(h1, "h1", "192.168.77.1")
    d1.set_remote_hosts([HostSpec("h2", "192.168.77.2"), HostSpec("h3", "192.168.77.3")])
    d1.setup_network(NET_A)
    assert d1.describe()["networks"]["net-a"]["flood_to"] == ["192.168.77.2", "192.168.77.3"]
    d1.host_left("h2")
    d1.host_joined(HostSpec("h4", "192.168.77.4"))
    assert d1.describe()["networks"]["net-a"]["flood_to"] == ["192.168.77.3", "192.168.77.4"]
