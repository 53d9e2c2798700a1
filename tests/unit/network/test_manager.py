"""The network manager over a private memory:// broker with the fake driver."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric import exception, rpc
from fabric.context import RequestContext
from fabric.db.models import (
    AddressAllocation,
    AddressPool,
    Datacenter,
    FloatingIp,
    Network,
    Port,
    Router,
    RouterInterface,
    Segment,
    Subnet,
    Tenant,
    TopologyHost,
)
from fabric.network import dbstate
from fabric.network.drivers import load
from fabric.network.drivers.fake import FakeDriver
from fabric.network.manager import NetworkManager
from fabric.network.rpcapi import NetworkAPI
from tests.unit.rpc.conftest import settings, wait_for  # noqa: F401 - fixtures

VXLAN = {"id": "net-1", "network_type": "vxlan", "segmentation_id": 10}
ROUTED = {"id": "net-r", "network_type": "routed", "match_mask": "0.0.15.240", "match_value": "0.0.1.16"}


@pytest.fixture
def workers(settings, transport):  # noqa: F811
    made = {}
    for host, tunnel in (("h1", "192.168.0.1"), ("h2", "192.168.0.2")):
        host_settings = settings.replace(default={"host": host}, network={"tunnel_address": tunnel})
        manager = NetworkManager(host_settings)
        server = rpc.RPCServer(transport, topic="network", host=host, endpoint=manager)
        server.start()
        made[host] = (manager, server)
    yield {host: manager for host, (manager, _) in made.items()}
    for _, server in made.values():
        server.stop()
        server.wait(5)


def test_fake_driver_is_the_default_and_linux_is_selectable():
    from fabric.config import Settings

    assert isinstance(load(Settings()), FakeDriver)
    assert type(load(Settings().replace(network={"driver": "linux"}))).__name__ == "LinuxDriver"


def test_plug_unplug_and_describe_through_rpc(workers, transport):  # noqa: F811
    api, ctx = NetworkAPI(transport, timeout=5), RequestContext()
    endpoint = {"id": "p1", "network_id": "net-1", "mac": "02:00:00:00:00:01", "address": "10.0.0.5"}
    with pytest.raises(exception.NotFound, match="net-1"):
        api.plug(ctx, "h1", endpoint)
    assert api.plug(ctx, "h1", endpoint, network=VXLAN) == {"device": workers["h1"].driver.names.endpoint("p1")}
    api.plug(ctx, "h1", endpoint, network=VXLAN)  # a redelivery changes nothing
    described = api.describe_host_networking(ctx, "h1")
    assert described["networks"]["net-1"]["endpoints"] == ["p1"]
    assert workers["h2"].driver.state.endpoints == {}  # the call went to h1 only
    api.unplug(ctx, "h1", "p1")
    api.unplug(ctx, "h1", "p1")
    assert api.describe_host_networking(ctx, "h1")["endpoints"] == {}
    with pytest.raises(exception.Invalid, match="MAC address"):
        api.plug(ctx, "h1", {**endpoint, "mac": "nope"})


def test_topology_changes_reach_every_host_by_fanout(workers, transport):  # noqa: F811
    api, ctx = NetworkAPI(transport, timeout=5), RequestContext()
    for host in ("h1", "h2"):
        api.set_routed(ctx, host, {"gateway": "10.64.16.0", "block": "10.64.16.0/20",
                                   "datacenter": "10.64.0.0/16"})
    api.plug(ctx, "h1", {"id": "r1", "network_id": "net-r", "mac": "02:00:00:00:00:11"}, network=ROUTED)
    api.plug(ctx, "h2", {"id": "r2", "network_id": "net-r", "mac": "02:00:00:00:00:12"}, network=ROUTED)
    api.host_joined(ctx, {"name": "h3", "tunnel_address": "192.168.0.3", "block": "10.64.48.0/20"})
    api.host_joined(ctx, {"name": "h1", "tunnel_address": "192.168.0.1", "block": "10.64.16.0/20"})
    wait_for(lambda: all("h3" in m.driver.state.remote_hosts for m in workers.values()), what="host_joined")
    wait_for(lambda: "h1" in workers["h2"].driver.state.remote_hosts, what="h1 joined h2's view")
    assert "h1" not in workers["h1"].driver.state.remote_hosts  # a host is never its own remote
    assert all("net-r" in m.driver.state.networks for m in workers.values())
    routes = api.describe_host_networking(ctx, "h2")["routes"]
    assert routes == {"10.64.16.0/20": "192.168.0.1", "10.64.48.0/20": "192.168.0.3"}
    api.host_left(ctx, "h3")
    wait_for(lambda: not any("h3" in m.driver.state.remote_hosts for m in workers.values()), what="host_left")
    api.network_deleted(ctx, "net-r")
    wait_for(lambda: not any(m.driver.state.networks for m in workers.values()), what="network_deleted")


def test_floating_addresses_are_tracked_per_host(workers, transport):  # noqa: F811
    api, ctx = NetworkAPI(transport, timeout=5), RequestContext()
    api.associate_floating(ctx, "h2", "172.31.0.9", "10.0.0.5")
    assert api.describe_host_networking(ctx, "h2")["floating"] == {"172.31.0.9": "10.0.0.5"}
    api.disassociate_floating(ctx, "h2", "172.31.0.9")
    api.disassociate_floating(ctx, "h2", "172.31.0.9")
    assert api.describe_host_networking(ctx, "h2")["floating"] == {}


def test_host_state_from_the_database_and_reconcile_on_start(sqlite_db, settings):  # noqa: F811
    with sqlite_db.begin() as session:
        session.add(Datacenter(id=1, name="default", prefix="10.64.0.0/16", host_bits=4, tenant_bits=4,
                               segment_bits=4, endpoint_bits=4))
        session.flush()
        session.add_all([TopologyHost(datacenter_id=1, name="h1", number=1, tunnel_address="192.168.0.1"),
                         TopologyHost(datacenter_id=1, name="h2", number=2, tunnel_address="192.168.0.2")])
        session.add(Tenant(id=1, datacenter_id=1, project_id="proj", number=1))
        session.flush()
        session.add(Segment(id=1, tenant_id=1, name="web", number=1))
        session.flush()
        session.add_all([
            Network(id="net-r", project_id="proj", network_type="routed", segment_id=1),
            Network(id="net-x", project_id="proj", network_type="vxlan", segmentation_id=77),
            Network(id="net-far", project_id="proj", network_type="vxlan", segmentation_id=78),
        ])
        session.add(Subnet(id="sub-x", network_id="net-x", project_id="proj", ip_version=4, cidr="10.30.0.0/24"))
        session.flush()
        session.add_all([
            Port(id="p-r", network_id="net-r", project_id="proj", mac_address="02:00:00:00:00:01", host="h1",
                 binding={"kind": "veth", "netns": "ns1"}),
            Port(id="p-x", network_id="net-x", project_id="proj", mac_address="02:00:00:00:00:02", host="h1"),
            Port(id="p-d", network_id="net-x", project_id="proj", mac_address="02:00:00:00:00:03", host="h1",
                 device_owner="network:dhcp"),
            Port(id="p-bad", network_id="net-x", project_id="proj", mac_address="not-a-mac", host="h1"),
            Port(id="p-far", network_id="net-far", project_id="proj", mac_address="02:00:00:00:00:04", host="h2"),
        ])
        session.add_all([AddressPool(id="seg", kind="segment", definition={}, size_limit=14),
                         AddressPool(id="sub-x", kind="subnet", subnet_id="sub-x", definition={}, size_limit=253)])
        session.flush()
        session.add_all([
            AddressAllocation(pool_id="seg", address="10.64.17.18", request_token="a", port_id="p-r"),
            AddressAllocation(pool_id="sub-x", address="10.30.0.5", request_token="b", port_id="p-x"),
            AddressAllocation(pool_id="sub-x", address="10.30.0.2", request_token="c", port_id="p-d"),
            FloatingIp(id="f1", address="172.31.0.1", project_id="proj", floating_network_id="net-x",
                       port_id="p-r", fixed_address="10.64.17.18", host="h1"),
        ])
    settings = settings.replace(default={"host": "h1"})
    state = dbstate.host_state(sqlite_db, "h1", settings)
    assert sorted(state.networks) == ["net-r", "net-x"]
    assert state.networks["net-x"].host_address == "10.30.0.2/24" and state.networks["net-x"].dhcp
    assert (state.networks["net-r"].match_mask, state.networks["net-r"].match_value) == ("0.0.15.240", "0.0.1.16")
    assert sorted(state.endpoints) == ["p-r", "p-x"]  # p-bad is logged and skipped
    assert state.endpoints["p-r"].kind == "veth" and state.endpoints["p-r"].netns == "ns1"
    assert state.endpoints["p-x"].address == "10.30.0.5"
    assert state.remote_hosts["h2"].block == "10.64.32.0/20" and state.routed.block == "10.64.16.0/20"
    assert state.floating["172.31.0.1"].fixed_address == "10.64.17.18"

    manager = NetworkManager(settings, db=sqlite_db)
    manager.init_host()
    assert manager.driver.state == state
    with sqlite_db.begin() as session:
        session.execute(sa.delete(Port).where(Port.id == "p-x"))
    manager.init_host()
    assert "p-x" not in manager.driver.describe()["endpoints"]


def test_external_addresses_are_placed_on_their_physical_network(sqlite_db, settings):  # noqa: F811
    with sqlite_db.begin() as session:
        session.add_all([
            Network(id="ext", project_id="admin", network_type="flat", physical_bridge="public", external=True),
            Network(id="ext-nophys", project_id="admin", network_type="vxlan", segmentation_id=90, external=True),
            Network(id="net-x", project_id="proj", network_type="vxlan", segmentation_id=77),
        ])
        session.add_all([
            Subnet(id="sub-ext", network_id="ext", project_id="admin", ip_version=4, cidr="203.0.113.0/24"),
            Subnet(id="sub-x", network_id="net-x", project_id="proj", ip_version=4, cidr="10.30.0.0/24"),
        ])
        session.flush()
        session.add_all([
            Port(id="p-x", network_id="net-x", project_id="proj", mac_address="02:00:00:00:00:02", host="h1"),
            Port(id="p-leg", network_id="net-x", project_id="proj", mac_address="02:00:00:00:00:05",
                 device_owner="network:router_interface"),
            Port(id="p-gw", network_id="ext", project_id="proj", mac_address="02:00:00:00:00:06",
                 device_owner="network:router_gateway"),
        ])
        session.add_all([AddressPool(id="sub-ext", kind="subnet", subnet_id="sub-ext", definition={}, size_limit=253)])
        session.flush()
        session.add(Router(id="r1", project_id="proj", external_network_id="ext", gateway_port_id="p-gw"))
        session.flush()
        session.add_all([
            RouterInterface(port_id="p-leg", router_id="r1", subnet_id="sub-x", ip_address="10.30.0.1"),
            AddressAllocation(pool_id="sub-ext", address="203.0.113.5", request_token="g", port_id="p-gw"),
            FloatingIp(id="f1", address="203.0.113.10", project_id="proj", floating_network_id="ext",
                       port_id="p-x", fixed_address="10.30.0.5", host="h1"),
            FloatingIp(id="f2", address="198.51.100.7", project_id="proj", floating_network_id="ext-nophys"),
        ])
    state = dbstate.host_state(sqlite_db, "h1", settings.replace(default={"host": "h1"}))
    floating = state.floating["203.0.113.10"]
    assert (floating.physical_network, floating.prefixlen) == ("public", 24)
    router = state.routers["r1"]
    assert (router.snat_address, router.physical_network, router.snat_prefixlen) == ("203.0.113.5", "public", 24)
    with sqlite_db.begin() as session:
        # Looked up by address (the associate_floating RPC names only the addresses).
        assert dbstate.floating_spec(session, "203.0.113.10", "10.30.0.5") == floating
        # An external network naming no physical network: no placement (the outside routes to the host).
        unplaced = dbstate.floating_spec(session, "198.51.100.7", "10.30.0.5")
        assert (unplaced.physical_network, unplaced.prefixlen) == (None, 32)
