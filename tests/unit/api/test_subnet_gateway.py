"""``subnet set --gateway`` (``PUT /subnets/{id}`` with ``gateway_ip``), as Neutron answers it: a
free address of the subnet outside its allocation pools becomes the gateway, null removes it,
IPAM's pool keeps the new gateway out of allocation and lets the old one be asked for; a
gateway in a pool, in use, outside the CIDR or held by a router's leg is refused naming it,
with nothing of the request written."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric.db.models import AddressPool, Subnet
from tests.unit.api.test_ports import create_port
from tests.unit.api.test_routers import add, make_router

N = "/networking/v2.0"
POOLS = [{"start": "10.70.0.10", "end": "10.70.0.100"}]


def network_with_subnet(api, member, **subnet):
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    body = {"network_id": net["id"], "cidr": "10.70.0.0/24", "allocation_pools": POOLS, **subnet}
    sub = api.app.post_json(f"{N}/subnets", {"subnet": body}, headers=member.headers).json["subnet"]
    return net["id"], sub


def set_subnet(api, member, subnet_id, status=200, **body):
    return api.app.put_json(f"{N}/subnets/{subnet_id}", {"subnet": body}, headers=member.headers, status=status)


def stored(api, subnet_id) -> tuple:
    """(the row's name, gateway and pools; its pool's stored definition, or None)."""
    with api.db.begin() as session:
        row = session.get(Subnet, subnet_id)
        pool = session.get(AddressPool, subnet_id)
        return (row.name, row.gateway_ip, row.allocation_pools), (pool.definition if pool else None)


def fixed_ip(port) -> str:
    return port["fixed_ips"][0]["ip_address"]


def test_the_gateway_moves_and_ipam_follows(api):
    member = api.make_member()
    net, sub = network_with_subnet(api, member)
    first = create_port(api, member, network_id=net).json["port"]  # the pool exists from here
    assert fixed_ip(first) == "10.70.0.10"
    shown = set_subnet(api, member, sub["id"], gateway_ip="10.70.0.5", name="moved",
                       dns_nameservers=["192.0.2.53"]).json["subnet"]
    assert (shown["gateway_ip"], shown["allocation_pools"], shown["name"], shown["dns_nameservers"]) == \
        ("10.70.0.5", POOLS, "moved", ["192.0.2.53"])
    assert api.app.get(f"{N}/subnets/{sub['id']}", headers=member.headers).json["subnet"]["gateway_ip"] == "10.70.0.5"
    # Every ipam worker is told to forget its cached definition (a fanout, after the commit).
    assert [c["subnet_id"] for c in api.recorder.named("subnet_updated")] == [sub["id"]]
    _, definition = stored(api, sub["id"])
    assert (definition["excluded"], definition["info"]["gateway"], definition["ranges"]) == \
        (["10.70.0.5"], "10.70.0.5", [["10.70.0.10", "10.70.0.100"]])
    # The new gateway is nobody's; the old one may be asked for; automatic addresses go on as before.
    resp = create_port(api, member, 400, network_id=net, fixed_ips=[{"subnet_id": sub["id"],
                                                                     "ip_address": "10.70.0.5"}])
    assert "10.70.0.5" in resp.json["NeutronError"]["message"]
    old = create_port(api, member, network_id=net, fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.70.0.1"}])
    assert fixed_ip(old.json["port"]) == "10.70.0.1"
    assert fixed_ip(create_port(api, member, network_id=net).json["port"]) == "10.70.0.11"
    # Sending the gateway it has (clients echo it) is no change and tells nobody.
    set_subnet(api, member, sub["id"], gateway_ip="10.70.0.5")
    assert len(api.recorder.named("subnet_updated")) == 1


def test_null_removes_the_gateway(api):
    member = api.make_member()
    net, sub = network_with_subnet(api, member)
    shown = set_subnet(api, member, sub["id"], gateway_ip=None).json["subnet"]
    assert (shown["gateway_ip"], shown["allocation_pools"]) == (None, POOLS)
    # No pool yet: it is stored with the subnet, as IPAM would make it now.
    assert stored(api, sub["id"])[1]["excluded"] == []
    port = create_port(api, member, network_id=net, fixed_ips=[{"subnet_id": sub["id"], "ip_address": "10.70.0.1"}])
    assert fixed_ip(port.json["port"]) == "10.70.0.1"
    # And a gateway may be set again where none was.
    assert set_subnet(api, member, sub["id"], gateway_ip="10.70.0.254").json["subnet"]["gateway_ip"] == "10.70.0.254"


@pytest.mark.parametrize("gateway, status, named", [
    ("10.70.0.50", 409, "Gateway ip 10.70.0.50 conflicts with allocation pool 10.70.0.10-10.70.0.100"),
    ("10.71.0.1", 400, "gateway_ip 10.71.0.1 is not inside the subnet 10.70.0.0/24"),
    ("10.70.0.255", 400, "gateway_ip 10.70.0.255 is the network or broadcast address"),
    ("not-an-ip", 400, "'not-an-ip' is not an IP address"),
    ("auto", 400, "gateway_ip 'auto' is not an IP address"),
])
def test_a_bad_gateway_is_refused_naming_it_and_nothing_is_written(api, gateway, status, named):
    member = api.make_member()
    net, sub = network_with_subnet(api, member)
    create_port(api, member, network_id=net)
    before = stored(api, sub["id"])
    resp = set_subnet(api, member, sub["id"], status, gateway_ip=gateway, name="not-kept")
    assert named in resp.json["NeutronError"]["message"]
    assert stored(api, sub["id"]) == before
    assert api.recorder.named("subnet_updated") == []


def test_a_gateway_a_port_holds_is_refused_naming_the_port(api):
    member = api.make_member()
    net, sub = network_with_subnet(api, member)
    port = create_port(api, member, network_id=net, fixed_ips=[{"subnet_id": sub["id"],
                                                                "ip_address": "10.70.0.200"}]).json["port"]
    before = stored(api, sub["id"])
    resp = set_subnet(api, member, sub["id"], 409, gateway_ip="10.70.0.200", name="not-kept")
    message = resp.json["NeutronError"]["message"]
    assert "The IP address 10.70.0.200 is in use" in message and port["id"] in message
    assert stored(api, sub["id"]) == before
    # Free again once the port is gone.
    api.app.delete(f"{N}/ports/{port['id']}", headers=member.headers, status=204)
    assert set_subnet(api, member, sub["id"], gateway_ip="10.70.0.200").json["subnet"]["gateway_ip"] == "10.70.0.200"


def test_a_gateway_a_router_leg_holds_cannot_move(api):
    member = api.make_member()
    _, sub = network_with_subnet(api, member)
    router = make_router(api, member).json["router"]
    leg = add(api, member, router["id"], subnet_id=sub["id"]).json
    before = stored(api, sub["id"])
    resp = set_subnet(api, member, sub["id"], 409, gateway_ip="10.70.0.5")
    assert f"Current gateway ip 10.70.0.1 already in use by port {leg['port_id']}" in \
        resp.json["NeutronError"]["message"]
    set_subnet(api, member, sub["id"], 409, gateway_ip=None)
    assert stored(api, sub["id"]) == before


def test_another_projects_subnet_gateway_cannot_be_set(api):
    member = api.make_member()
    _, sub = network_with_subnet(api, member)
    set_subnet(api, api.make_member(), sub["id"], 404, gateway_ip="10.70.0.5")
    with api.db.begin() as session:
        assert session.scalar(sa.select(Subnet.gateway_ip).where(Subnet.id == sub["id"])) == "10.70.0.1"
