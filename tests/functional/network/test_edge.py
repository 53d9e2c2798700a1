"""The external network's edge: floating and router gateway addresses on the host's
interface to the external network, reached by an outside that has no route to the host."""

from __future__ import annotations

import subprocess

import pytest

from fabric import exception
from fabric.context import RequestContext
from fabric.db.models import FloatingIp, Network, Subnet
from fabric.network.edge import interface_map
from fabric.network.manager import NetworkManager
from fabric.network.model import EndpointSpec, FloatingSpec, NetworkSpec, RouterSpec
from tests.fixtures.netns import in_ns, ping, ping_eventually

NET = NetworkSpec(id="net-e", network_type="vxlan", segmentation_id=320, host_address="10.40.0.1/24")
FIXED, SNAT, FLOATING, OUTSIDE = "10.40.0.21", "203.0.113.5", "203.0.113.10", "203.0.113.2"


def echo_sources(ns: str) -> dict[str, int]:
    """Source address -> ICMP echo requests that reached ``ns`` (its own nft counters)."""
    listed = in_ns(ns, "nft", "list", "chain", "ip", "probe", "arrive").stdout
    return {line.split("ip saddr ")[1].split()[0]: int(line.split("packets ")[1].split()[0])
            for line in listed.splitlines() if "ip saddr " in line}


def external_segment(netns, h1: str) -> str:
    """The outside: a namespace on the external segment, joined to h1's interface ``ext0``
    (which has no address of its own), counting the echo requests that reach it by source."""
    outside = netns("out")
    subprocess.run(["ip", "-n", h1, "link", "add", "ext0", "type", "veth", "peer", "name", "up0",
                    "netns", outside], check=True)
    in_ns(h1, "ip", "link", "set", "ext0", "up")
    netns.configure_endpoint(outside, f"{OUTSIDE}/24", ifname="up0")
    subprocess.run(["ip", "netns", "exec", outside, "nft", "-f", "-"], check=True, text=True, input=(
        "table ip probe {\n chain arrive {\n type filter hook input priority 0;\n"
        f" ip saddr {SNAT} icmp type echo-request counter\n"
        f" ip saddr {FLOATING} icmp type echo-request counter\n"
        f" ip saddr {FIXED} icmp type echo-request counter\n }}\n}}\n"))
    assert in_ns(outside, "ip", "route", "get", FIXED, check=False).returncode != 0  # no route inside
    return outside


def test_outside_without_a_route_reaches_floating_and_sees_snat(netns, simulated_host):
    h1, ep = netns("h1"), netns("ep")
    outside = external_segment(netns, h1)

    driver = simulated_host(h1, "h1", "192.168.80.1", external_interfaces="public:ext0")
    driver.setup_network(NET)
    driver.plug(EndpointSpec("ep-e", NET.id, "02:00:00:00:2e:01", address=FIXED, kind="veth", netns=ep))
    netns.configure_endpoint(ep, f"{FIXED}/24", gateway="10.40.0.1")
    assert not ping(ep, OUTSIDE)  # no router yet: nothing leaves

    # A router with its gateway on the external network: its address goes on ext0, egress takes it.
    router = RouterSpec("r1", networks=[NET.id], subnets=["10.40.0.0/24"], snat_address=SNAT,
                        physical_network="public", snat_prefixlen=24)
    driver.set_routers([router])
    assert driver.describe()["edge_addresses"] == {"ext0": [f"{SNAT}/24"]}
    assert ping_eventually(ep, OUTSIDE)
    assert echo_sources(outside)[SNAT] >= 1 and echo_sources(outside)[FIXED] == 0

    # A floating address: on ext0 too, answered for (ARP) and translated both ways.
    assert not ping(outside, FLOATING)
    floating = FloatingSpec(FLOATING, FIXED, physical_network="public", prefixlen=24)
    driver.associate_floating(floating)
    driver.associate_floating(floating)  # idempotent
    assert driver.describe()["edge_addresses"] == {"ext0": [f"{FLOATING}/24", f"{SNAT}/24"]}
    assert ping_eventually(outside, FLOATING)
    assert FLOATING in in_ns(outside, "ip", "neigh", "show", FLOATING).stdout  # resolved by ARP
    before = echo_sources(outside)
    assert ping_eventually(ep, OUTSIDE)
    after = echo_sources(outside)
    assert after[FLOATING] > before[FLOATING] and after[SNAT] == before[SNAT]  # the floating SNAT wins

    # Disassociated: the address leaves ext0 and no longer answers (ARP included).
    driver.disassociate_floating(FLOATING)
    assert driver.describe()["edge_addresses"] == {"ext0": [f"{SNAT}/24"]}
    in_ns(h1, "conntrack", "-F", check=False)  # conntrack may be absent; entries expire anyway
    in_ns(outside, "ip", "neigh", "flush", "dev", "up0")
    assert not ping(outside, FLOATING, count=2)
    assert ping_eventually(ep, OUTSIDE)  # back to the router's address
    assert echo_sources(outside)[FLOATING] == after[FLOATING]

    # A new worker whose state has no router left removes fabric's addresses, not the administrator's.
    in_ns(h1, "ip", "addr", "add", "198.51.100.1/24", "dev", "ext0")
    state = driver.state
    state.routers = {}
    restarted = simulated_host(h1, "h1", "192.168.80.1", external_interfaces="public:ext0")
    restarted.sync(state)
    assert restarted.describe()["edge_addresses"] == {"ext0": []}
    assert "198.51.100.1/24" in in_ns(h1, "ip", "-4", "-o", "addr", "show", "ext0").stdout


def test_the_worker_places_a_floating_address_on_its_external_network(netns, simulated_host, sqlite_db):
    """The associate_floating RPC names only the addresses: the worker finds the external
    network's physical network and subnet in the database."""
    h1, ep = netns("h1"), netns("ep")
    outside = external_segment(netns, h1)
    driver = simulated_host(h1, "h1", "192.168.80.1", external_interfaces="public:ext0")
    manager = NetworkManager(driver.settings, db=sqlite_db, driver=driver)
    with sqlite_db.begin() as session:
        session.add(Network(id="ext", project_id="admin", network_type="flat", physical_bridge="public",
                            external=True))
        session.flush()
        session.add(Subnet(id="sub-ext", network_id="ext", project_id="admin", ip_version=4, cidr="203.0.113.0/24"))
        session.add(FloatingIp(id="f1", address=FLOATING, project_id="p", floating_network_id="ext",
                               fixed_address=FIXED, host="h1"))
    driver.setup_network(NET)
    driver.plug(EndpointSpec("ep-e", NET.id, "02:00:00:00:2e:01", address=FIXED, kind="veth", netns=ep))
    netns.configure_endpoint(ep, f"{FIXED}/24", gateway="10.40.0.1")

    manager.associate_floating(RequestContext(), FLOATING, FIXED)
    assert f"{FLOATING}/24" in in_ns(h1, "ip", "-4", "-o", "addr", "show", "ext0").stdout
    assert ping_eventually(outside, FLOATING)
    manager.disassociate_floating(RequestContext(), FLOATING)
    assert FLOATING not in in_ns(h1, "ip", "-4", "-o", "addr", "show", "ext0").stdout


@pytest.mark.parametrize("raw", ["public", "public:", ":eth1", "a:eth1,a:eth2", "a:" + "x" * 16])
def test_a_bad_interface_mapping_is_refused_naming_it(raw):
    with pytest.raises(exception.InvalidSetting, match="external_interfaces"):
        interface_map(raw)


def test_interface_mapping_parses_pairs():
    assert interface_map(" public:eth1, dmz:eth2 ,") == {"public": "eth1", "dmz": "eth2"}
    assert interface_map("") == {}


#: Prints "bound <ip> router=<router>" when udhcpc gets its lease, and configures it as a guest's script would.
UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add "$ip/$mask" dev "$interface"
[ -n "$router" ] && ip route add default via "$router"
echo "bound $ip router=$router"
"""


def test_a_guest_gets_its_host_as_gateway_by_dhcp_while_a_router_there_has_a_leg_on_its_network(
        netns, simulated_host, tmp_path):
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    h1, ep = netns("h1"), netns("ep")
    outside = external_segment(netns, h1)
    driver = simulated_host(h1, "h1", "192.168.80.1", external_interfaces="public:ext0")
    network = NetworkSpec(id="net-gw", network_type="vxlan", segmentation_id=321, host_address="10.40.0.1/24",
                          dhcp=True)
    driver.setup_network(network)
    driver.plug(EndpointSpec("ep-e", network.id, "02:00:00:00:2e:01", address=FIXED, kind="veth", netns=ep))
    in_ns(ep, "ip", "link", "set", "eth0", "up")

    def lease() -> str:
        in_ns(ep, "ip", "addr", "flush", "dev", "eth0")
        done = in_ns(ep, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-A", "1",
                     "-s", str(script))
        return next(line for line in done.stdout.splitlines() if line.startswith("bound "))

    assert lease() == f"bound {FIXED} router="  # an isolated network: no way out
    driver.set_routers([RouterSpec("r1", networks=[network.id], subnets=["10.40.0.0/24"], snat_address=SNAT,
                                   physical_network="public", snat_prefixlen=24)])
    assert lease() == f"bound {FIXED} router=10.40.0.1"  # this host, its address on the bridge
    assert ping_eventually(ep, OUTSIDE)  # out through it, as the router's address
    assert echo_sources(outside)[SNAT] >= 1 and echo_sources(outside)[FIXED] == 0
    driver.set_routers([])
    assert lease() == f"bound {FIXED} router="
