"""Romana's routed L3 mode across two simulated hosts, addressed by fabric.ipam's layout."""

from __future__ import annotations

import json

from fabric.ipam.layout import Layout
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
