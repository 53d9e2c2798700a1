"""Two network workers on a real broker, each driving a simulated host's kernel.

Topology changes reach both by fanout cast; plugging is a call to one host's
queue; the data plane follows: endpoints on the two hosts ping each other only
while the hosts know each other.
"""

from __future__ import annotations

import pytest

from fabric import rpc
from fabric.context import RequestContext
from fabric.network.drivers.linux import LinuxDriver
from fabric.network.manager import NetworkManager
from fabric.network.rpcapi import NetworkAPI
from tests.fixtures.netns import isolated, ping_eventually
from tests.functional.network.conftest import host_settings
from tests.unit.rpc.conftest import wait_for

NETWORK = {"id": "net-q", "network_type": "vxlan", "segmentation_id": 610}
TUNNEL = {"h1": "192.168.77.1", "h2": "192.168.77.2"}


@pytest.fixture
def two_workers(netns, rabbit_vhost, tmp_path):
    hosts = {name: netns(name) for name in TUNNEL}
    netns.underlay(hosts["h1"], hosts["h2"], TUNNEL["h1"], TUNNEL["h2"])
    base = host_settings("h1", "", str(tmp_path)).replace(rpc={"transport_url": rabbit_vhost,
                                                               "call_timeout": 10.0})
    transport = rpc.get_transport(base.rpc)
    managers, servers = {}, []
    try:
        for name, ns in hosts.items():
            settings = base.replace(default={"host": name, "data_dir": str(tmp_path / name)},
                                    network={"tunnel_address": TUNNEL[name]})
            managers[name] = NetworkManager(settings, driver=LinuxDriver(settings, netns=ns))
            server = rpc.RPCServer(transport, topic="network", host=name, endpoint=managers[name])
            server.start()
            servers.append(server)
        yield transport, managers
    finally:
        for server in servers:
            server.stop()
            server.wait(5)
        for manager in managers.values():
            manager.cleanup_host()
        transport.cleanup()


def test_fanout_topology_and_host_calls_drive_the_kernel(two_workers, netns):
    transport, managers = two_workers
    api, ctx = NetworkAPI(transport, timeout=10), RequestContext()
    api.network_created(ctx, NETWORK)
    for name, address in TUNNEL.items():
        api.host_joined(ctx, {"name": name, "tunnel_address": address})
    wait_for(lambda: all(m.driver.state.remote_hosts for m in managers.values()),
             timeout=10, what="fanout to both workers")
    # No port on it yet: no host sets the new network up.
    assert not any(m.driver.state.networks for m in managers.values())

    a1, a2 = netns("a1"), netns("a2")
    device = api.plug(ctx, "h1", {"id": "q1", "network_id": "net-q", "mac": "02:00:00:00:61:01",
                                  "kind": "veth", "netns": a1}, network=NETWORK)
    assert device == {"device": managers["h1"].driver.names.endpoint("q1")}
    api.plug(ctx, "h2", {"id": "q2", "network_id": "net-q", "mac": "02:00:00:00:61:02",
                         "kind": "veth", "netns": a2}, network=NETWORK)
    assert api.describe_host_networking(ctx, "h2")["networks"]["net-q"]["flood_to"] == [TUNNEL["h1"]]
    netns.configure_endpoint(a1, "10.61.0.1/24")
    netns.configure_endpoint(a2, "10.61.0.2/24")
    assert ping_eventually(a1, "10.61.0.2")

    api.host_left(ctx, "h1")
    wait_for(lambda: not managers["h2"].driver.state.remote_hosts, timeout=10, what="host_left")
    wait_for(lambda: not managers["h2"].driver.kernel.flood_destinations(
        managers["h2"].driver.names.vxlan("net-q")), timeout=10, what="h2 forgets h1's tunnel")
    # Learning is off on the tunnel: without a flood entry, h2 has no way to reach h1.
    assert isolated(a2, a1, "10.61.0.2", "10.61.0.1")
