"""Romana's routed L3 mode across two simulated hosts, addressed by fabric.ipam's layout."""

from __future__ import annotations

import json

from fabric.ipam.layout import Layout
from fabric.network.dhcp import running
from fabric.network.drivers.linux import ROUTED_DHCP
from fabric.network.kernel import RTPROT_FABRIC
from fabric.network.model import EndpointSpec, HostSpec, NetworkSpec, RoutedSpec, segment_match
from tests.fixtures.netns import in_ns, ping, ping_eventually

LAYOUT = Layout.build("10.64.0.0/16", 4, 4, 4, 4)
TUNNEL = {1: "192.168.77.1", 2: "192.168.77.2"}


def routed_spec(host: int) -> RoutedSpec:
    return RoutedSpec(gateway=str(LAYOUT.host_gateway(host)), block=str(LAYOUT.host_block(host)),
                      datacenter=str(LAYOUT.prefix))


def routed_network(tenant: int, segment: int) -> NetworkSpec:
    mask, value = segment_match(LAYOUT, tenant, segment)
    return NetworkSpec(id=f"t{tenant}s{segment}", network_type="routed", project_id=f"tenant-{tenant}",
                       match_mask=mask, match_value=value)


def fabric_routes(ns: str) -> dict[str, str]:
    routes = json.loads(in_ns(ns, "ip", "-j", "route", "show", "proto", str(RTPROT_FABRIC)).stdout)
    return {r["dst"] if "/" in r["dst"] else r["dst"] + "/32": r.get("gateway") or r["dev"] for r in routes}


def test_routed_hosts_route_per_endpoint_and_once_per_remote_host(netns, simulated_host):
    hosts = {1: netns("h1"), 2: netns("h2")}
    netns.underlay(hosts[1], hosts[2], TUNNEL[1], TUNNEL[2])
    drivers = {}
    for number, ns in hosts.items():
        other = 3 - number
        driver = drivers[number] = simulated_host(ns, f"h{number}", TUNNEL[number])
        driver.set_routed(routed_spec(number))
        driver.set_remote_hosts([HostSpec(f"h{other}", TUNNEL[other], str(LAYOUT.host_block(other)))])
        for tenant in (1, 2):
            driver.setup_network(routed_network(tenant, 1))

    # (host, tenant, endpoint offset): three of tenant 1 and one of tenant 2 on h1.
    placed = [(1, 1, 2), (1, 1, 3), (1, 1, 4), (1, 2, 2), (2, 1, 2), (2, 2, 2)]
    endpoint_ns = {}
    for host, tenant, offset in placed:
        key = (host, tenant, offset)
        address = str(LAYOUT.encode(host, tenant, 1, offset))
        ns = endpoint_ns[key] = netns(f"e{host}{tenant}{offset}")
        drivers[host].plug(EndpointSpec(f"ep-{host}-{tenant}-{offset}", f"t{tenant}s1",
                                        f"02:00:00:{host:02x}:{tenant:02x}:{offset:02x}",
                                        address=address, kind="veth", netns=ns))
        netns.configure_endpoint(ns, f"{address}/{LAYOUT.prefix.prefixlen}",
                                 gateway=str(LAYOUT.host_gateway(host)))

    for host, ns in hosts.items():
        other = 3 - host
        routes = fabric_routes(ns)
        local = [k for k in placed if k[0] == host]
        assert {dst: via for dst, via in routes.items() if not dst.endswith("/32")} == {
            str(LAYOUT.host_block(other)): TUNNEL[other]}
        assert sorted(dst for dst in routes if dst.endswith("/32")) == sorted(
            f"{LAYOUT.encode(*k[:2], 1, k[2])}/32" for k in local)

    def addr(host, tenant, offset):
        return str(LAYOUT.encode(host, tenant, 1, offset))

    src = endpoint_ns[(1, 1, 2)]
    assert ping_eventually(src, addr(2, 1, 2))          # across hosts, same tenant
    assert ping_eventually(src, addr(1, 1, 3))          # same host, same tenant
    assert ping_eventually(endpoint_ns[(2, 2, 2)], addr(1, 2, 2))
    # ARP is warm by now (proxy ARP answers every datacenter address), so a loss is the filter.
    assert not ping(src, addr(2, 2, 2), count=2)        # across hosts, other tenant
    assert not ping(src, addr(1, 2, 2), count=2)        # same host, other tenant

    # Unplugging removes exactly that endpoint's route; the remote route stays single.
    drivers[1].unplug("ep-1-1-4")
    drivers[1].unplug("ep-1-1-4")
    routes = fabric_routes(hosts[1])
    assert f"{addr(1, 1, 4)}/32" not in routes
    assert len([d for d in routes if not d.endswith("/32")]) == 1


#: Writes what the DHCP server handed out (udhcpc's environment) to $LEASE.
LEASE_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && env > "$LEASE"
exit 0
"""


def lease(ns: str, tmp_path) -> dict[str, str]:
    """One DHCP exchange from ``ns``'s eth0: the options udhcpc was given ({} when none came)."""
    script, out = tmp_path / "lease.sh", tmp_path / f"lease-{ns}"
    script.write_text(LEASE_SCRIPT)
    script.chmod(0o755)
    out.unlink(missing_ok=True)
    in_ns(ns, "ip", "link", "set", "eth0", "up")
    in_ns(ns, "env", f"LEASE={out}", "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1",
          "-A", "1", "-s", str(script), check=False)
    if not out.exists():
        return {}
    env = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    return {k: env[k] for k in ("ip", "mask", "router", "staticroutes", "serverid") if k in env}


def routed_lease(host: int, address: str) -> dict[str, str]:
    gateway = str(LAYOUT.host_gateway(host))
    return {"ip": address, "mask": "32", "router": gateway, "serverid": gateway,
            "staticroutes": f"{gateway}/32 0.0.0.0 0.0.0.0/0 {gateway}"}


def test_each_host_serves_dhcp_to_its_own_routed_endpoints_while_it_has_any(netns, simulated_host, tmp_path):
    hosts = {1: netns("h1"), 2: netns("h2")}
    netns.underlay(hosts[1], hosts[2], TUNNEL[1], TUNNEL[2])
    drivers = {}
    for number, ns in hosts.items():
        driver = drivers[number] = simulated_host(ns, f"h{number}", TUNNEL[number])
        driver.set_routed(routed_spec(number))
        driver.set_remote_hosts([HostSpec(f"h{3 - number}", TUNNEL[3 - number], str(LAYOUT.host_block(3 - number)))])
    # A routed network set up without endpoints runs no server.
    drivers[1].setup_network(routed_network(1, 1))
    assert drivers[1].describe()["networks"]["t1s1"]["dhcp_pid"] is None

    def plug(host: int, tenant: int, offset: int, mac_last: int) -> tuple[str, str]:
        ns, address = netns(f"d{host}{tenant}{offset}{mac_last}"), str(LAYOUT.encode(host, tenant, 1, offset))
        drivers[host].setup_network(routed_network(tenant, 1))  # as the worker's plug does
        drivers[host].plug(EndpointSpec(f"ep-{host}-{tenant}-{offset}", f"t{tenant}s1",
                                        f"02:00:00:{host:02x}:{tenant:02x}:{mac_last:02x}",
                                        address=address, kind="veth", netns=ns))
        return ns, address

    a, a_address = plug(1, 1, 2, 1)
    b, b_address = plug(1, 2, 2, 2)      # another tenant's network, same host: the same server
    c, c_address = plug(2, 1, 2, 3)      # the other host serves its own
    described = drivers[1].describe()["networks"]
    pid = described["t1s1"]["dhcp_pid"]
    assert pid is not None and described["t2s1"]["dhcp_pid"] == pid
    assert drivers[1].wanted_dhcp() == {ROUTED_DHCP: {("02:00:00:01:01:01", a_address),
                                                      ("02:00:00:01:02:02", b_address)}}
    assert lease(a, tmp_path) == routed_lease(1, a_address)
    assert lease(b, tmp_path) == routed_lease(1, b_address)
    assert lease(c, tmp_path) == routed_lease(2, c_address)
    # An L2 network's server beside it on the same host (bound to its bridge) answers its own
    # guests; the routed server (bound to no device) still answers the routed ones.
    drivers[1].setup_network(NetworkSpec(id="net-l2", network_type="vxlan", segmentation_id=320,
                                         host_address="10.31.0.1/24", dhcp=True))
    l2 = netns("l2")
    drivers[1].plug(EndpointSpec("ep-l2", "net-l2", "02:00:00:00:31:05", address="10.31.0.5", kind="veth", netns=l2))
    assert lease(l2, tmp_path) == {"ip": "10.31.0.5", "mask": "24", "serverid": "10.31.0.1"}
    assert lease(a, tmp_path) == routed_lease(1, a_address)

    # Unplugged, its entry goes (and its lease: the address is served to the next port at once).
    drivers[1].unplug("ep-1-2-2")
    assert drivers[1].dhcp.entries(ROUTED_DHCP) == {("02:00:00:01:01:01", a_address)}
    late, late_address = plug(1, 2, 2, 9)
    assert late_address == b_address and lease(late, tmp_path) == routed_lease(1, b_address)
    assert drivers[1].describe()["networks"]["t1s1"]["dhcp_pid"] == pid  # told by SIGHUP, never restarted

    # A restarted worker converges to the same server: same configuration, same process.
    again = simulated_host(hosts[1], "h1", TUNNEL[1])
    again.sync(drivers[1].state)
    assert again.describe()["networks"]["t1s1"]["dhcp_pid"] == pid

    # The last routed endpoint leaves: the server goes (and the other host's stays).
    again.unplug("ep-1-1-2")
    assert again.describe()["networks"]["t2s1"]["dhcp_pid"] == pid
    again.unplug("ep-1-2-2")
    assert not running(pid) and again.dhcp.networks() == ["net-l2"]
    assert drivers[2].describe()["networks"]["t1s1"]["dhcp_pid"] is not None

    # Configured otherwise (say, a new gateway address), the server is started anew with it.
    before = drivers[2].describe()["networks"]["t1s1"]["dhcp_pid"]
    moved = str(LAYOUT.host_gateway(2) + 1)
    drivers[2].set_routed(RoutedSpec(gateway=moved, block=str(LAYOUT.host_block(2)), datacenter=str(LAYOUT.prefix)))
    after = drivers[2].describe()["networks"]["t1s1"]["dhcp_pid"]
    assert after not in (None, before) and not running(before)
    assert f"--dhcp-option=option:router,{moved}" in open(f"/proc/{after}/cmdline").read().split("\0")
