"""Network v2.0: networks (provider attributes for admins), subnets, ports, isolation."""

from __future__ import annotations

import pytest

from fabric.db.models import AddressAllocation, AddressPool, Port, Subnet
from fabric.ipam.api import validate_subnet

N = "/networking/v2.0"


def _hold_address(api, member, network_id, subnet_id, address, *, mac, device_id, owner) -> str:
    """A port of ``owner`` holding ``address`` of the subnet's pool, as IPAM leaves it; its id."""
    with api.db.begin() as session:
        port = Port(network_id=network_id, project_id=member.project_id, mac_address=mac,
                    device_id=device_id, device_owner=owner, status="ACTIVE")
        session.add(port)
        session.flush()
        if session.get(AddressPool, subnet_id) is None:
            session.add(AddressPool(id=subnet_id, kind="subnet", subnet_id=subnet_id, definition={},
                                    size_limit=253))
            session.flush()
        session.add(AddressAllocation(pool_id=subnet_id, address=address, request_token=f"t-{port.id}",
                                      port_id=port.id))
        return port.id


def test_member_network_gets_a_vni_and_workers_are_told(api):
    member = api.make_member()
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n1"}}, headers=member.headers,
                            status=201).json["network"]
    assert net["project_id"] == member.project_id and "provider:network_type" not in net
    cast = api.recorder.named("network_created")[-1]["network"]
    assert (cast["id"], cast["network_type"], cast["segmentation_id"]) == (net["id"], "vxlan", 1000)
    second = api.app.post_json(f"{N}/networks", {"network": {"name": "n2"}}, headers=member.headers).json
    assert api.recorder.named("network_created")[-1]["network"]["segmentation_id"] == 1001
    assert second["network"]["id"] != net["id"]


def test_provider_attributes_are_admin_only_and_unique(api):
    member = api.make_member()
    admin = {"X-Auth-Token": api.admin.token}
    body = {"network": {"name": "v", "provider:network_type": "vlan", "provider:segmentation_id": 42}}
    resp = api.app.post_json(f"{N}/networks", body, headers=member.headers, status=403)
    assert "provider:*" in resp.json["NeutronError"]["message"]
    net = api.app.post_json(f"{N}/networks", body, headers=admin, status=201).json["network"]
    assert (net["provider:network_type"], net["provider:segmentation_id"]) == ("vlan", 42)
    resp = api.app.post_json(f"{N}/networks", body, headers=admin, status=409)
    assert "vlan segmentation id 42 is already in use" in resp.json["NeutronError"]["message"]
    body["network"]["provider:segmentation_id"] = 5000
    resp = api.app.post_json(f"{N}/networks", body, headers=admin, status=400)
    assert "5000 is out of range for vlan (1-4094)" in resp.json["NeutronError"]["message"]
    body["network"]["provider:network_type"] = "token-ring"
    resp = api.app.post_json(f"{N}/networks", body, headers=admin, status=400)
    assert "provider:network_type" in resp.json["NeutronError"]["message"]


def test_subnets_validate_and_ports_list(api):
    member = api.make_member()
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    sub = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.1.0.0/24",
                                                        "ip_version": 4}}, headers=member.headers,
                            status=201).json["subnet"]
    assert sub["gateway_ip"] == "10.1.0.1"
    assert sub["allocation_pools"] == [{"start": "10.1.0.2", "end": "10.1.0.254"}]
    assert api.recorder.named("subnet_created")[-1]["subnet_id"] == sub["id"]
    for cidr, words in (("10.1.0.0/25", "overlaps with another subnet"), ("10.2.0.1/24", "has host bits set"),
                        ("10.3.0.0/31", "too small")):
        resp = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": cidr}},
                                 headers=member.headers, status=400)
        assert words in resp.json["NeutronError"]["message"] and cidr.split("/")[0] in \
            resp.json["NeutronError"]["message"]
    shown = api.app.get(f"{N}/networks/{net['id']}", headers=member.headers).json["network"]
    assert shown["subnets"] == [sub["id"]]
    port_id = _hold_address(api, member, net["id"], sub["id"], "10.1.0.5", mac="fa:16:3e:00:00:01",
                            device_id="vm-1", owner="compute:nova")
    ports = api.app.get(f"{N}/ports?device_id=vm-1", headers=member.headers).json["ports"]
    assert ports[0]["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.1.0.5"}]
    assert api.app.get(f"{N}/ports/{port_id}", headers=member.headers).json["port"]["mac_address"] == \
        "fa:16:3e:00:00:01"
    resp = api.app.delete(f"{N}/networks/{net['id']}", headers=member.headers, status=409)
    assert "has 1 port(s) in use" in resp.json["NeutronError"]["message"]
    resp = api.app.delete(f"{N}/subnets/{sub['id']}", headers=member.headers, status=409)
    assert "still has 1 allocated address(es)" in resp.json["NeutronError"]["message"]


def test_a_port_without_an_owner_holds_its_subnet(api):
    """A user's port with no device_owner (NULL) holds its address like any other port: the
    subnet's delete is a 409, not a cascade that takes the address from under the port."""
    member = api.make_member()
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    sub = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.4.0.0/24",
                                                        "ip_version": 4}}, headers=member.headers).json["subnet"]
    _hold_address(api, member, net["id"], sub["id"], "10.4.0.9", mac="fa:16:3e:00:00:09", device_id="",
                  owner=None)
    resp = api.app.delete(f"{N}/subnets/{sub['id']}", headers=member.headers, status=409)
    assert "still has 1 allocated address(es)" in resp.json["NeutronError"]["message"]


def _subnet_rows(api) -> list:
    with api.db.begin() as session:
        return [(s.id, s.cidr) for s in session.query(Subnet)]


@pytest.mark.parametrize("extra, bad_value", [
    # IPAM refuses a pool holding the network address (it could never build the
    # pool); the API used to store such a subnet and answer 201.
    ({"gateway_ip": "10.5.0.254", "allocation_pools": [{"start": "10.5.0.0", "end": "10.5.0.10"}]},
     "10.5.0.0-10.5.0.10"),
    ({"allocation_pools": [{"start": "10.5.0.200", "end": "10.5.0.255"}]}, "10.5.0.200-10.5.0.255"),
    ({"allocation_pools": [{"start": "10.5.0.2", "end": "10.5.0.9"}, {"start": "10.5.0.5", "end": "10.5.0.20"}]},
     "10.5.0.5-10.5.0.20"),
    ({"allocation_pools": [{"start": "10.5.0.x", "end": "10.5.0.9"}]}, "10.5.0.x"),
    ({"gateway_ip": "10.5.0.255"}, "10.5.0.255"),
    ({"gateway_ip": "10.6.0.1"}, "10.6.0.1"),
    ({"cidr": "10.5.0.0/24", "ip_version": 6}, "ip_version 6"),
    ({"cidr": "10.5.0.0/24", "gateway_ip": "10.5.0.9", "allocation_pools": [{"start": "10.5.0.5", "end": "10.5.0.20"}]},
     "contains the gateway_ip 10.5.0.9"),
])
def test_a_subnet_ipam_would_refuse_is_400_with_nothing_committed(api, extra, bad_value):
    member = api.make_member()
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    before = _subnet_rows(api)
    body = {"network_id": net["id"], "cidr": "10.5.0.0/24", "ip_version": 4} | extra
    resp = api.app.post_json(f"{N}/subnets", {"subnet": body}, headers=member.headers, status=400)
    assert bad_value in resp.json["NeutronError"]["message"]
    assert _subnet_rows(api) == before
    assert api.recorder.named("subnet_created") == []


def test_the_api_stores_the_subnet_ipam_normalises(api):
    member = api.make_member()
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    body = {"network_id": net["id"], "cidr": "10.7.0.0/24", "ip_version": 4, "gateway_ip": "10.7.0.1",
            "allocation_pools": [{"start": "10.7.0.100", "end": "10.7.0.120"},
                                 {"start": "10.7.0.5", "end": "10.7.0.10"}]}
    sub = api.app.post_json(f"{N}/subnets", {"subnet": body}, headers=member.headers, status=201).json["subnet"]
    expected = validate_subnet("10.7.0.0/24", "10.7.0.1", body["allocation_pools"], ip_version=4)
    assert (sub["cidr"], sub["gateway_ip"], sub["allocation_pools"]) == \
        (expected.cidr, expected.gateway_ip, expected.allocation_pools)
    assert sub["allocation_pools"][0] == {"start": "10.7.0.5", "end": "10.7.0.10"}  # sorted, as IPAM keeps them
    no_gateway = api.app.post_json(f"{N}/subnets", {"subnet": {
        "network_id": net["id"], "cidr": "10.8.0.0/30", "ip_version": 4, "gateway_ip": None}},
        headers=member.headers, status=201).json["subnet"]
    assert (no_gateway["gateway_ip"], no_gateway["allocation_pools"]) == \
        (None, [{"start": "10.8.0.1", "end": "10.8.0.2"}])


def test_a_subnet_whose_only_addresses_are_dhcp_ports_can_be_deleted(api):
    member = api.make_member()
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    sub = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.4.0.0/24",
                                                        "ip_version": 4}}, headers=member.headers).json["subnet"]
    _hold_address(api, member, net["id"], sub["id"], "10.4.0.2", mac="fa:16:3e:00:00:09",
                  device_id="dhcp-h1", owner="network:dhcp")

    api.app.delete(f"{N}/subnets/{sub['id']}", headers=member.headers, status=204)

    with api.db.begin() as session:
        assert session.query(AddressAllocation).filter_by(pool_id=sub["id"]).count() == 0


def test_isolation(api):
    owner, other = api.make_member(), api.make_member()
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "mine"}}, headers=owner.headers).json["network"]
    assert api.app.get(f"{N}/networks", headers=other.headers).json["networks"] == []
    api.app.get(f"{N}/networks/{net['id']}", headers=other.headers, status=404)
    api.app.delete(f"{N}/networks/{net['id']}", headers=other.headers, status=404)
    resp = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.0.0.0/24"}},
                             headers=other.headers, status=404)
    assert resp.json["NeutronError"]["type"] == "NotFound"
    api.app.delete(f"{N}/networks/{net['id']}", headers=owner.headers, status=204)
    assert api.recorder.named("network_deleted")[-1]["network_id"] == net["id"]
