"""Hosts added to and removed from the topology through the admin API reach every
running network worker: the API calls IPAM, IPAM commits and announces by
fanout. One memory:// broker, one SQLite database, IPAM and two network
workers (fake driver) served on it."""

from __future__ import annotations

import pytest

from fabric import rpc
from fabric.api.clients import rpc_clients
from fabric.db.models import TopologyHost
from fabric.ipam.manager import IpamManager
from fabric.ipam.topology import Topology
from fabric.network.manager import NetworkManager
from fabric.network.model import HostSpec
from tests.fixtures.api import build_harness
from tests.unit.rpc.conftest import settings, wait_for  # noqa: F401 - fixtures

HOSTS = "/fabric/v1/topology/hosts"


@pytest.fixture
def cloud(sqlite_db, settings, transport, api_settings):  # noqa: F811
    """The API (real RPC clients), IPAM and the network workers of h1 and h2."""
    Topology(sqlite_db).configure_datacenter("default", "10.64.0.0/16", 4, 4, 4, 4)
    servers, networks = [], {}
    ipam = IpamManager(settings, host="ipam1", db=sqlite_db, transport=transport)
    servers.append(rpc.RPCServer(transport, topic="ipam", host="ipam1", endpoint=ipam))
    for host, tunnel in (("h1", "192.168.0.1"), ("h2", "192.168.0.2")):
        host_settings = settings.replace(default={"host": host}, network={"tunnel_address": tunnel})
        networks[host] = NetworkManager(host_settings, db=sqlite_db, transport=transport)
        servers.append(rpc.RPCServer(transport, topic="network", host=host, endpoint=networks[host]))
    for server in servers:
        server.start()
    harness = build_harness(sqlite_db, api_settings, clients=rpc_clients(transport, call_timeout=5))
    yield harness, networks
    for server in servers:
        server.stop()
        server.wait(5)


def _hosts_in_db(db) -> list[tuple[str, str | None]]:
    with db.begin() as session:
        return sorted((h.name, h.tunnel_address) for h in session.query(TopologyHost))


def test_a_host_added_through_the_api_reaches_every_network_worker(cloud):
    api, networks = cloud
    admin = {"X-Auth-Token": api.admin.token}

    host = api.app.post_json(HOSTS, {"host": {"name": "h3", "tunnel_address": "192.168.0.3"}}, headers=admin,
                             status=201).json["host"]

    assert (host["name"], host["number"], host["block"]) == ("h3", 0, "10.64.0.0/20")
    expected = HostSpec("h3", "192.168.0.3", "10.64.0.0/20")
    wait_for(lambda: all(n.driver.state.remote_hosts.get("h3") == expected for n in networks.values()),
             what="h3 in every network worker's remote hosts")
    # The workers' view is the database's: a worker starting now would read the same.
    assert _hosts_in_db(api.db) == [("h3", "192.168.0.3")]

    api.app.delete(f"{HOSTS}/h3", headers=admin, status=204)

    wait_for(lambda: not any("h3" in n.driver.state.remote_hosts for n in networks.values()),
             what="h3 gone from every network worker")
    assert _hosts_in_db(api.db) == []
    resp = api.app.delete(f"{HOSTS}/h3", headers=admin, status=404)
    assert "h3" in resp.json["message"]


@pytest.mark.parametrize("body, bad_value", [
    ({"name": "h4", "tunnel_address": "192.168.0.300"}, "192.168.0.300"),
    ({"name": "h4", "tunnel_address": "2001:db8::4"}, "2001:db8::4"),
    ({"name": "compute.*", "tunnel_address": "192.168.0.4"}, "compute.*"),
    ({"name": "h4", "number": 16}, "16"),
])
def test_a_bad_host_is_400_naming_it_and_nothing_is_announced(cloud, body, bad_value):
    api, networks = cloud
    admin = {"X-Auth-Token": api.admin.token}
    resp = api.app.post_json(HOSTS, {"host": body}, headers=admin, status=400)
    assert bad_value in resp.json["message"]
    assert _hosts_in_db(api.db) == []
    # A good host added after it is announced; the bad one never was.
    api.app.post_json(HOSTS, {"host": {"name": "h5", "tunnel_address": "192.168.0.5"}}, headers=admin, status=201)
    wait_for(lambda: all("h5" in n.driver.state.remote_hosts for n in networks.values()), what="h5 announced")
    assert all(sorted(n.driver.state.remote_hosts) == ["h5"] for n in networks.values())


def test_only_an_admin_changes_the_topology(cloud):
    api, _ = cloud
    member = api.make_member()
    resp = api.app.post_json(HOSTS, {"host": {"name": "h6", "tunnel_address": "192.168.0.6"}},
                             headers=member.headers, status=403)
    assert "adding a host to the topology requires the admin role" in resp.json["message"]
    api.app.delete(f"{HOSTS}/h1", headers=member.headers, status=403)
    assert _hosts_in_db(api.db) == []
