"""DHCP from the per-network dnsmasq, and floating addresses through fabric's nftables table."""

from __future__ import annotations

from fabric.network.dhcp import running
from fabric.network.model import EndpointSpec, FloatingSpec, HostSpec, NetworkSpec
from tests.fixtures.netns import in_ns, ping, ping_eventually
from tests.functional.network.test_routed import LAYOUT, routed_network, routed_spec

UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && busybox ip addr add "$ip/$mask" dev "$interface"
exit 0
"""


def dhcp_client(ns: str, script: str) -> str:
    """Run one DHCP exchange in ``ns``; return eth0's IPv4 addresses afterwards."""
    in_ns(ns, "ip", "link", "set", "eth0", "up")
    in_ns(ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-A", "1",
          "-s", script)
    return in_ns(ns, "ip", "-4", "-o", "addr", "show", "eth0").stdout


def test_endpoint_gets_the_address_allocated_for_its_mac(netns, simulated_host, tmp_path):
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    h1 = netns("h1")
    driver = simulated_host(h1, "h1", "192.168.77.1")
    network = NetworkSpec(id="net-d", network_type="vxlan", segmentation_id=300,
                          host_address="10.20.0.1/24", dhcp=True)
    driver.setup_network(network)
    e1, e2 = netns("e1"), netns("e2")
    driver.plug(EndpointSpec("ep-1", "net-d", "02:00:00:00:0d:01", address="10.20.0.21",
                             kind="veth", netns=e1))
    pid = driver.describe()["networks"]["net-d"]["dhcp_pid"]
    assert "10.20.0.21/24" in dhcp_client(e1, str(script))

    # A new allocation reaches the running server (hosts file + SIGHUP, same process).
    driver.plug(EndpointSpec("ep-2", "net-d", "02:00:00:00:0d:02", address="10.20.0.37",
                             kind="veth", netns=e2))
    assert driver.describe()["networks"]["net-d"]["dhcp_pid"] == pid
    assert "10.20.0.37/24" in dhcp_client(e2, str(script))

    driver.teardown_network("net-d")
    assert not running(pid)
    assert driver.describe()["networks"] == {}


def test_floating_address_reaches_its_endpoint_until_disassociated(netns, simulated_host):
    h1, outside = netns("h1"), netns("out")
    netns.underlay(h1, outside, "192.168.78.1", "192.168.78.2")
    in_ns(outside, "ip", "route", "add", "172.31.5.10/32", "via", "192.168.78.1")
    driver = simulated_host(h1, "h1", "192.168.78.1")
    driver.set_routed(routed_spec(1))
    driver.set_remote_hosts([HostSpec("h2", "192.168.78.9", str(LAYOUT.host_block(2)))])
    driver.setup_network(routed_network(1, 1))
    fixed = str(LAYOUT.encode(1, 1, 1, 2))
    ep = netns("ep")
    driver.plug(EndpointSpec("ep-f", "t1s1", "02:00:00:00:0f:01", address=fixed, kind="veth", netns=ep))
    netns.configure_endpoint(ep, f"{fixed}/16", gateway=str(LAYOUT.host_gateway(1)))

    assert not ping(outside, "172.31.5.10")
    driver.associate_floating(FloatingSpec("172.31.5.10", fixed))
    driver.associate_floating(FloatingSpec("172.31.5.10", fixed))  # idempotent
    assert ping_eventually(outside, "172.31.5.10")
    # Outbound traffic leaves as the floating address (the outside has no route to 10.64/16).
    assert ping_eventually(ep, "192.168.78.2")
    rules = driver.describe()["nat_rules"]
    assert len([r for r in rules if "dnat" in r]) == 2  # prerouting and output, once each
    assert len([r for r in rules if "snat" in r]) == 1

    driver.disassociate_floating("172.31.5.10")
    assert not [r for r in driver.describe()["nat_rules"] if "nat" in r.split(":", 1)[1]]
    in_ns(h1, "conntrack", "-F", check=False)  # conntrack may be absent; entries expire anyway
    assert not ping(outside, "172.31.5.10")


def test_an_address_freed_by_one_port_is_served_to_the_next_one(netns, simulated_host, tmp_path):
    # IPAM hands a released address out again at once (lowest free first); dnsmasq must not
    # keep it leased to the MAC of the port that left.
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    h1 = netns("h1")
    driver = simulated_host(h1, "h1", "192.168.79.1")
    driver.setup_network(NetworkSpec(id="net-r", network_type="vxlan", segmentation_id=301,
                                     host_address="10.21.0.1/24", dhcp=True))
    first, second = netns("f1"), netns("f2")
    # A port that stays keeps the network (and its running dnsmasq) on the host meanwhile.
    driver.plug(EndpointSpec("ep-stays", "net-r", "02:00:00:00:0e:03", address="10.21.0.23"))
    driver.plug(EndpointSpec("ep-old", "net-r", "02:00:00:00:0e:01", address="10.21.0.21", kind="veth",
                             netns=first))
    assert "10.21.0.21/24" in dhcp_client(first, str(script))
    driver.unplug("ep-old")
    driver.plug(EndpointSpec("ep-new", "net-r", "02:00:00:00:0e:02", address="10.21.0.21", kind="veth",
                             netns=second))
    assert "10.21.0.21/24" in dhcp_client(second, str(script))
    driver.teardown_network("net-r")
