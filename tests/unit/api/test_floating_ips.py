"""Network v2.0 floating IPs: addresses from an external network's subnet (IPAM, answered
in-process as the ipam worker answers), association through a port to its host's network
worker, isolation, bad input; and once over memory:// to real IPAM and network workers."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric import rpc
from fabric.api.clients import rpc_clients
from fabric.db.models import AddressAllocation, FloatingIp, Port
from fabric.ipam.manager import IpamManager
from fabric.network.manager import NetworkManager
from tests.fixtures.api import build_harness
from tests.unit.api.test_network import _hold_address
from tests.unit.rpc.conftest import settings, wait_for  # noqa: F401 - fixtures

N = "/networking/v2.0"
FIPS = f"{N}/floatingips"


def admin_h(api):
    return {"X-Auth-Token": api.admin.token}


def external_network(api, cidr: str = "203.0.113.0/24") -> tuple[str, str]:
    """An admin's external network with one subnet: (network id, subnet id)."""
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "ext", "router:external": True}},
                            headers=admin_h(api), status=201).json["network"]
    sub = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": cidr,
                                                        "enable_dhcp": False}}, headers=admin_h(api)).json
    return net["id"], sub["subnet"]["id"]


def guest_port(api, member, address: str = "10.1.0.5", host: str | None = "h1") -> str:
    """A server's port of ``member`` on a tenant network, holding ``address``, bound to ``host``."""
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    sub = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.1.0.0/24"}},
                            headers=member.headers).json["subnet"]
    port_id = _hold_address(api, member, net["id"], sub["id"], address, mac="fa:16:3e:00:00:01",
                            device_id="vm-1", owner="compute:nova")
    with api.db.begin() as session:
        session.get(Port, port_id).host = host
    return port_id


def create(api, member, status: int = 201, **body):
    return api.app.post_json(FIPS, {"floatingip": body}, headers=member.headers, status=status)


def held_by_floating(api) -> list[str]:
    """Addresses IPAM holds for floating IPs."""
    with api.db.begin() as session:
        return sorted(session.scalars(sa.select(AddressAllocation.address)
                                      .where(AddressAllocation.request_token.startswith("floating:"))))


def test_create_takes_an_ipam_address_of_the_external_subnet(api):
    ext, _ = external_network(api)
    member = api.make_member()
    first = create(api, member, floating_network_id=ext).json["floatingip"]
    assert (first["floating_ip_address"], first["status"], first["port_id"], first["project_id"]) == \
        ("203.0.113.2", "DOWN", None, member.project_id)
    chosen = create(api, member, floating_network_id=ext, floating_ip_address="203.0.113.10").json["floatingip"]
    assert chosen["floating_ip_address"] == "203.0.113.10"
    assert held_by_floating(api) == ["203.0.113.10", "203.0.113.2"]

    listed = api.app.get(FIPS, headers=member.headers).json["floatingips"]
    assert [f["id"] for f in listed] == [first["id"], chosen["id"]]
    by_address = api.app.get(f"{FIPS}?floating_ip_address=203.0.113.10", headers=member.headers).json
    assert [f["id"] for f in by_address["floatingips"]] == [chosen["id"]]
    assert api.app.get(f"{FIPS}/{chosen['id']}", headers=member.headers).json["floatingip"] == chosen

    # An address already held is refused, and nothing more is written.
    resp = create(api, member, status=409, floating_network_id=ext, floating_ip_address="203.0.113.10")
    assert "203.0.113.10" in resp.json["NeutronError"]["message"]
    assert len(api.app.get(FIPS, headers=member.headers).json["floatingips"]) == 2

    api.app.delete(f"{FIPS}/{first['id']}", headers=member.headers, status=204)
    assert held_by_floating(api) == ["203.0.113.10"]
    api.app.get(f"{FIPS}/{first['id']}", headers=member.headers, status=404)
    # The address went back to the pool: the next one takes it again.
    assert create(api, member, floating_network_id=ext).json["floatingip"]["floating_ip_address"] == "203.0.113.2"


def test_bad_create_input_is_4xx_naming_it_and_nothing_is_written(api):
    ext, ext_subnet = external_network(api)
    member = api.make_member()
    tenant = api.app.post_json(f"{N}/networks", {"network": {"name": "t"}}, headers=member.headers).json["network"]
    bare = api.app.post_json(f"{N}/networks", {"network": {"name": "bare", "router:external": True}},
                             headers=admin_h(api)).json["network"]
    cases = [
        ({"floating_network_id": tenant["id"]}, 400, f"{tenant['id']} is not an external network"),
        ({"floating_network_id": "no-such-net"}, 404, "no-such-net"),
        ({"floating_network_id": bare["id"]}, 400, f"external network {bare['id']} has no IPv4 subnet"),
        ({"floating_network_id": ext, "subnet_id": "nope"}, 400, "floatingip.subnet_id nope"),
        ({"floating_network_id": ext, "floating_ip_address": "203.0.113.300"}, 400, "203.0.113.300"),
        ({"floating_network_id": ext, "floating_ip_address": "198.51.100.7"}, 400, "198.51.100.7"),
        ({"floating_network_id": ext, "port_id": "no-such-port"}, 404, "no-such-port"),
        ({}, 400, "floatingip.floating_network_id"),
    ]
    for body, status, named in cases:
        resp = create(api, member, status=status, **body)
        assert named in resp.json["NeutronError"]["message"], (body, resp.json)
    assert api.app.get(FIPS, headers=admin_h(api)).json["floatingips"] == []
    assert held_by_floating(api) == []
    assert ext_subnet  # the subnet the good requests would take from


def test_associate_and_disassociate_through_the_port_reach_its_host(api):
    ext, _ = external_network(api)
    member = api.make_member()
    port_id = guest_port(api, member, "10.1.0.5", host="h1")
    fip = create(api, member, floating_network_id=ext, floating_ip_address="203.0.113.10").json["floatingip"]

    # `openstack server add floating ip` updates the floating IP with the server's port.
    put = api.app.put_json(f"{FIPS}/{fip['id']}", {"floatingip": {"port_id": port_id}}, headers=member.headers)
    assert (put.json["floatingip"]["port_id"], put.json["floatingip"]["fixed_ip_address"],
            put.json["floatingip"]["status"]) == (port_id, "10.1.0.5", "ACTIVE")
    [told] = api.recorder.named("associate_floating")
    assert (told["host"], told["address"], told["fixed_address"]) == ("h1", "203.0.113.10", "10.1.0.5")
    with api.db.begin() as session:  # what a network worker rebuilds its NAT from
        row = session.get(FloatingIp, fip["id"])
        assert (row.host, row.fixed_address, row.port_id) == ("h1", "10.1.0.5", port_id)
    assert [f["id"] for f in api.app.get(f"{FIPS}?port_id={port_id}", headers=member.headers).json[
        "floatingips"]] == [fip["id"]]
    # Another floating IP on the same fixed address is refused.
    other = create(api, member, floating_network_id=ext).json["floatingip"]
    resp = api.app.put_json(f"{FIPS}/{other['id']}", {"floatingip": {"port_id": port_id}},
                            headers=member.headers, status=409)
    assert "10.1.0.5" in resp.json["NeutronError"]["message"] and "203.0.113.10" in \
        resp.json["NeutronError"]["message"]

    # `openstack floating ip unset --port` sends port_id null.
    put = api.app.put_json(f"{FIPS}/{fip['id']}", {"floatingip": {"port_id": None}}, headers=member.headers)
    assert (put.json["floatingip"]["port_id"], put.json["floatingip"]["status"]) == (None, "DOWN")
    [untold] = api.recorder.named("disassociate_floating")
    assert (untold["host"], untold["address"]) == ("h1", "203.0.113.10")
    with api.db.begin() as session:
        row = session.get(FloatingIp, fip["id"])
        assert (row.host, row.fixed_address, row.port_id) == (None, None, None)

    # Deleting an associated one tells its host too; the external network goes only after its floating IPs.
    api.app.put_json(f"{FIPS}/{fip['id']}", {"floatingip": {"port_id": port_id}}, headers=member.headers)
    resp = api.app.delete(f"{N}/networks/{ext}", headers=admin_h(api), status=409)
    assert "floating IP" in resp.json["NeutronError"]["message"]
    for floating in (fip, other):
        api.app.delete(f"{FIPS}/{floating['id']}", headers=member.headers, status=204)
    assert [(kw["host"], kw["address"]) for kw in api.recorder.named("disassociate_floating")] == \
        [("h1", "203.0.113.10"), ("h1", "203.0.113.10")]
    assert held_by_floating(api) == []


def test_an_address_a_row_already_has_is_refused_and_given_back(api):
    """A floating_ips row IPAM knows nothing of (as tools wrote them before this API): the
    allocation succeeds, the row's unique address refuses it, and IPAM gets the address back."""
    ext, _ = external_network(api)
    member = api.make_member()
    with api.db.begin() as session:
        session.add(FloatingIp(address="203.0.113.20", project_id=member.project_id, floating_network_id=ext))
    resp = create(api, member, status=409, floating_network_id=ext, floating_ip_address="203.0.113.20")
    assert "203.0.113.20 is already in use" in resp.json["NeutronError"]["message"]
    assert held_by_floating(api) == []
    assert len(api.app.get(FIPS, headers=member.headers).json["floatingips"]) == 1


def test_association_refusals_name_the_problem_and_change_nothing(api):
    ext, _ = external_network(api)
    member, stranger = api.make_member(), api.make_member()
    unbound = guest_port(api, member, "10.1.0.5", host=None)
    theirs = guest_port(api, stranger, "10.1.0.5", host="h2")
    fip = create(api, member, floating_network_id=ext).json["floatingip"]
    cases = [
        ({"port_id": unbound}, 409, f"port {unbound} is bound to no host"),
        ({"port_id": theirs}, 404, theirs),
        ({"port_id": unbound, "fixed_ip_address": "10.1.0.99"}, 400, "10.1.0.99"),
        ({"port_id": "no-such-port"}, 404, "no-such-port"),
    ]
    for body, status, named in cases:
        resp = api.app.put_json(f"{FIPS}/{fip['id']}", {"floatingip": body}, headers=member.headers,
                                status=status)
        assert named in resp.json["NeutronError"]["message"], (body, resp.json)
    assert api.app.get(f"{FIPS}/{fip['id']}", headers=member.headers).json["floatingip"] == fip
    assert api.recorder.named("associate_floating") == []


def test_another_projects_floating_ips_are_not_found(api):
    ext, _ = external_network(api)
    owner, stranger = api.make_member(), api.make_member()
    fip = create(api, owner, floating_network_id=ext).json["floatingip"]
    assert api.app.get(FIPS, headers=stranger.headers).json["floatingips"] == []
    api.app.get(f"{FIPS}/{fip['id']}", headers=stranger.headers, status=404)
    api.app.put_json(f"{FIPS}/{fip['id']}", {"floatingip": {"port_id": None}}, headers=stranger.headers, status=404)
    api.app.delete(f"{FIPS}/{fip['id']}", headers=stranger.headers, status=404)
    assert held_by_floating(api) == [fip["floating_ip_address"]]


@pytest.fixture
def workers(sqlite_db, settings, transport, api_settings):  # noqa: F811
    """The API over real RPC clients, with IPAM and h1's network worker (fake driver) served on memory://."""
    ipam = IpamManager(settings, host="ipam1", db=sqlite_db, transport=transport)
    network = NetworkManager(settings.replace(default={"host": "h1"}), db=sqlite_db, transport=transport)
    servers = [rpc.RPCServer(transport, topic="ipam", host="ipam1", endpoint=ipam),
               rpc.RPCServer(transport, topic="network", host="h1", endpoint=network)]
    for server in servers:
        server.start()
    yield build_harness(sqlite_db, api_settings, clients=rpc_clients(transport, call_timeout=5)), network
    for server in servers:
        server.stop()
        server.wait(5)
    ipam.cleanup_host()


def test_over_rpc_ipam_gives_the_address_and_the_hosts_worker_translates_it(workers):
    api, network = workers
    ext, _ = external_network(api)
    member = api.make_member()
    port_id = guest_port(api, member, "10.1.0.5", host="h1")
    fip = create(api, member, floating_network_id=ext, port_id=port_id).json["floatingip"]
    address = fip["floating_ip_address"]
    assert (address, fip["fixed_ip_address"]) == ("203.0.113.2", "10.1.0.5")
    wait_for(lambda: address in network.driver.state.floating, what="the floating address on h1")
    assert network.driver.state.floating[address].fixed_address == "10.1.0.5"

    api.app.put_json(f"{FIPS}/{fip['id']}", {"floatingip": {"port_id": None}}, headers=member.headers)
    assert address not in network.driver.state.floating  # the call returned after the worker applied it
    api.app.delete(f"{FIPS}/{fip['id']}", headers=member.headers, status=204)
    assert held_by_floating(api) == []
