"""802.1Q VLAN networks: run where the kernel has VLAN devices, skip with its reason elsewhere."""

from __future__ import annotations

import pytest

from fabric import exception
from fabric.network.model import EndpointSpec, NetworkSpec
from tests.fixtures.netns import in_ns, ping_eventually


def vlan_support(netns) -> str | None:
    """None when 802.1Q devices can be made; otherwise the kernel's answer."""
    scratch = netns("vlanprobe")
    in_ns(scratch, "ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    done = in_ns(scratch, "ip", "link", "add", "link", "probe0", "name", "probe0.5", "type", "vlan",
                 "id", "5", check=False)
    return None if done.returncode == 0 else done.stderr.strip()


def test_vlan_network_reports_the_missing_kernel_support(netns, simulated_host):
    if vlan_support(netns) is None:
        pytest.skip("this kernel has 802.1Q devices; the unsupported path cannot be shown")
    h1 = netns("h1")
    in_ns(h1, "ip", "link", "add", "trunk0", "type", "veth", "peer", "name", "trunk1")
    driver = simulated_host(h1, "h1", "192.168.77.1", trunk_interface="trunk0")
    with pytest.raises(exception.NetworkTypeUnsupported, match="802.1Q"):
        driver.setup_network(NetworkSpec(id="net-v", network_type="vlan", segmentation_id=42))


def test_vlan_endpoints_on_two_hosts_share_a_segment(netns, simulated_host):
    reason = vlan_support(netns)
    if reason is not None:
        pytest.skip(f"kernel has no 802.1Q VLAN devices: {reason}")
    h1, h2 = netns("h1"), netns("h2")
    # The trunk: a veth pair between the hosts, carrying tagged frames.
    in_ns(h1, "ip", "link", "add", "trunk0", "type", "veth", "peer", "name", "trunk0", "netns", h2)
    drivers = [simulated_host(ns, name, "", trunk_interface="trunk0") for ns, name in ((h1, "h1"), (h2, "h2"))]
    network = NetworkSpec(id="net-v", network_type="vlan", segmentation_id=42)
    endpoints = []
    for index, driver in enumerate(drivers, start=1):
        driver.setup_network(network)
        ep = netns(f"v{index}")
        driver.plug(EndpointSpec(f"ep-v{index}", "net-v", f"02:00:00:00:42:0{index}", kind="veth", netns=ep))
        netns.configure_endpoint(ep, f"10.42.0.{index}/24")
        endpoints.append(ep)
    assert ping_eventually(endpoints[0], "10.42.0.2")
    drivers[0].teardown_network("net-v")
    assert drivers[0].kernel.link(drivers[0].names.vlan("net-v")) is None
