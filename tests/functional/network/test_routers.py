"""A router realised by one simulated host's gateway and NAT (the Linux driver in a namespace):
two tenant networks are isolated until a router joins them, then reach each other through
the host's bridges; with the router's gateway set, their traffic leaves as the gateway's
address (the outside has no route back to the tenant subnets); removing the router isolates
them again."""

from __future__ import annotations

from fabric.network.model import EndpointSpec, NetworkSpec, RouterSpec
from tests.fixtures.netns import in_ns, ping, ping_eventually

NET_A = NetworkSpec(id="net-ra", network_type="vxlan", project_id="t", segmentation_id=310,
                    host_address="10.81.0.2/24")
NET_B = NetworkSpec(id="net-rb", network_type="vxlan", project_id="t", segmentation_id=320,
                    host_address="10.82.0.2/24")
GATEWAY = "203.0.113.7"


def test_a_router_joins_its_networks_and_translates_their_way_out(netns, simulated_host):
    h1, outside = netns("h1"), netns("out")
    netns.underlay(h1, outside, "192.168.79.1", "192.168.79.2")
    # The outside knows the router's gateway address (on the external network) is behind h1,
    # and nothing of the tenant subnets.
    in_ns(outside, "ip", "route", "add", f"{GATEWAY}/32", "via", "192.168.79.1")
    driver = simulated_host(h1, "h1", "192.168.79.1")
    driver.setup_network(NET_A)
    driver.setup_network(NET_B)
    a, b = netns("ra"), netns("rb")
    driver.plug(EndpointSpec("ep-ra", NET_A.id, "02:00:00:00:1a:01", kind="veth", netns=a))
    driver.plug(EndpointSpec("ep-rb", NET_B.id, "02:00:00:00:1b:01", kind="veth", netns=b))
    netns.configure_endpoint(a, "10.81.0.10/24", gateway="10.81.0.2")
    netns.configure_endpoint(b, "10.82.0.10/24", gateway="10.82.0.2")
    assert ping_eventually(a, "10.81.0.2") and ping_eventually(b, "10.82.0.2")  # each reaches its host
    assert not ping(a, "10.82.0.10")  # no router: the host keeps the networks apart
    assert not ping(a, "192.168.79.2")  # and nothing leaves (the outside cannot answer 10.81/24)

    router = RouterSpec(id="r1", networks=[NET_A.id, NET_B.id], subnets=["10.81.0.0/24", "10.82.0.0/24"])
    driver.set_routers([router])
    assert ping_eventually(a, "10.82.0.10") and ping_eventually(b, "10.81.0.10")
    assert not ping(a, "192.168.79.2")  # no gateway yet: still no way out

    driver.set_routers([RouterSpec(id="r1", networks=router.networks, subnets=router.subnets,
                                   snat_address=GATEWAY)])
    assert ping_eventually(a, "192.168.79.2") and ping_eventually(b, "192.168.79.2")
    rules = driver.describe()["nat_rules"]
    assert len([r for r in rules if "snat" in r]) == 2  # one per subnet
    assert ping(a, "10.82.0.10")  # between the legs, no translation needed or done

    driver.set_routers([])
    in_ns(h1, "conntrack", "-F", check=False)  # conntrack may be absent; entries expire anyway
    assert not ping(a, "10.82.0.10") and not ping(a, "192.168.79.2")
    assert not [r for r in driver.describe()["nat_rules"] if "snat" in r or "accept" in r]
