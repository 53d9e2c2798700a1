"""Network v2.0 ports the user makes: addresses from IPAM (answered in-process as the ipam
worker answers), MACs, security groups, set, delete refused while bound or owned, bad input
named; a server booted on a port keeps its address (IPAM answers the port's own allocation)."""

from __future__ import annotations

import sqlalchemy as sa

from fabric.api import quota
from fabric.context import RequestContext
from fabric.db.models import AddressAllocation, Instance, Port, PortSecurityGroup
from fabric.ipam.manager import IpamManager
from fabric.network.model import port_request_token
from tests.unit.api.test_compute import make_flavor, make_image

N = "/networking/v2.0"
PORTS = f"{N}/ports"


def tenant_network(api, member, cidr="10.7.0.0/24", name="n"):
    """A member's network with one subnet: (network id, subnet id)."""
    net = api.app.post_json(f"{N}/networks", {"network": {"name": name}}, headers=member.headers).json["network"]
    sub = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": cidr}},
                            headers=member.headers).json["subnet"]
    return net["id"], sub["id"]


def create_port(api, member, status=201, **body):
    return api.app.post_json(PORTS, {"port": body}, headers=member.headers, status=status)


def allocations(api, port_id=None) -> list[tuple[str, str, str | None]]:
    """(address, token, port) of every allocation (of one port)."""
    with api.db.begin() as session:
        query = sa.select(AddressAllocation.address, AddressAllocation.request_token, AddressAllocation.port_id)
        if port_id:
            query = query.where(AddressAllocation.port_id == port_id)
        return sorted(tuple(r) for r in session.execute(query))


def used(api, member, resource: str) -> int:
    with api.db.begin() as session:
        return quota.usages(session, member.project_id)[resource]


def test_a_port_takes_the_lowest_address_of_the_first_subnet_from_ipam(api):
    member = api.make_member()
    net, sub = tenant_network(api, member)
    port = create_port(api, member, network_id=net, name="p1", description="mine").json["port"]
    assert port["fixed_ips"] == [{"subnet_id": sub, "ip_address": "10.7.0.2"}]
    assert (port["name"], port["description"], port["device_owner"], port["device_id"]) == ("p1", "mine", "", "")
    assert port["mac_address"].startswith("fa:16:3e:") and port["status"] == "DOWN"
    # IPAM's allocation, linked to the port, under the port's own token.
    assert allocations(api, port["id"]) == [("10.7.0.2", port_request_token(port["id"], sub), port["id"])]
    groups = api.app.get(f"{N}/security-groups?name=default", headers=member.headers).json["security_groups"]
    assert port["security_groups"] == [groups[0]["id"]]
    assert used(api, member, "port") == 1
    listed = api.app.get(f"{PORTS}?fixed_ips=ip_address%3D10.7.0.2", headers=member.headers).json["ports"]
    assert [p["id"] for p in listed] == [port["id"]]
    # Another project sees nothing of it.
    other = api.make_member()
    api.app.get(f"{PORTS}/{port['id']}", headers=other.headers, status=404)
    assert api.app.get(PORTS, headers=other.headers).json["ports"] == []


def test_a_named_address_and_mac_are_kept_and_a_taken_one_leaves_nothing_behind(api):
    member = api.make_member()
    net, sub = tenant_network(api, member)
    port = create_port(api, member, network_id=net, mac_address="FA:16:3E:AA:BB:CC",
                       fixed_ips=[{"subnet_id": sub, "ip_address": "10.7.0.40"}]).json["port"]
    assert (port["mac_address"], port["fixed_ips"][0]["ip_address"]) == ("fa:16:3e:aa:bb:cc", "10.7.0.40")
    resp = create_port(api, member, 409, network_id=net, fixed_ips=[{"ip_address": "10.7.0.40"}])
    assert "10.7.0.40" in resp.json["NeutronError"]["message"]
    resp = create_port(api, member, 409, network_id=net, mac_address="fa:16:3e:aa:bb:cc")
    assert "fa:16:3e:aa:bb:cc" in resp.json["NeutronError"]["message"]
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Port).where(Port.network_id == net)) == 1
    assert used(api, member, "port") == 1
    assert [a[0] for a in allocations(api)] == ["10.7.0.40"]


def test_bad_port_input_is_a_4xx_naming_the_value(api):
    member = api.make_member()
    net, sub = tenant_network(api, member)
    _, other_sub = tenant_network(api, member, "10.8.0.0/24", "n2")
    cases = [
        ({"mac_address": "01:00:5e:00:00:01"}, 400, "01:00:5e:00:00:01"),  # multicast
        ({"mac_address": "nonsense"}, 400, "nonsense"),
        ({"fixed_ips": [{"ip_address": "192.0.2.9"}]}, 400, "192.0.2.9"),
        ({"fixed_ips": [{"subnet_id": other_sub}]}, 400, other_sub),
        ({"fixed_ips": [{"subnet_id": sub, "ip_address": "10.8.0.5"}]}, 400, "10.8.0.5"),
        ({"fixed_ips": [{"subnet_id": sub}, {"ip_address": "10.7.0.9"}]}, 400, sub),
        ({"fixed_ips": [{"subnet_id": sub, "ip_address": "10.7.0.1"}]}, 400, "10.7.0.1"),  # the gateway
        ({"security_groups": ["no-such-group"]}, 404, "no-such-group"),
    ]
    for extra, status, named in cases:
        resp = create_port(api, member, status, network_id=net, **extra)
        assert named in resp.json["NeutronError"]["message"], (extra, resp.json)
    create_port(api, member, 404, network_id="no-such-network")
    assert allocations(api) == [] and used(api, member, "port") == 0
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Port)) == 0


def test_port_set_changes_names_groups_and_moves_addresses_through_ipam(api):
    member = api.make_member()
    net, sub = tenant_network(api, member)
    sub2 = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net, "cidr": "10.9.0.0/24"}},
                             headers=member.headers).json["subnet"]["id"]
    port = create_port(api, member, network_id=net).json["port"]
    web = api.app.post_json(f"{N}/security-groups", {"security_group": {"name": "web"}},
                            headers=member.headers).json["security_group"]
    body = {"port": {"name": "renamed", "admin_state_up": False, "security_groups": [web["id"]],
                     "fixed_ips": [{"subnet_id": sub, "ip_address": "10.7.0.77"}, {"subnet_id": sub2}]}}
    changed = api.app.put_json(f"{PORTS}/{port['id']}", body, headers=member.headers).json["port"]
    assert (changed["name"], changed["admin_state_up"], changed["security_groups"]) == ("renamed", False, [web["id"]])
    assert sorted(ip["ip_address"] for ip in changed["fixed_ips"]) == ["10.7.0.77", "10.9.0.2"]
    assert [a[0] for a in allocations(api, port["id"])] == ["10.7.0.77", "10.9.0.2"]
    # The old address went back to the pool: a new port gets it.
    assert create_port(api, member, network_id=net).json["port"]["fixed_ips"][0]["ip_address"] == "10.7.0.2"
    # A refused address leaves the port as it was.
    other = create_port(api, member, network_id=net, fixed_ips=[{"ip_address": "10.7.0.50"}]).json["port"]
    resp = api.app.put_json(f"{PORTS}/{port['id']}", {"port": {"fixed_ips": [{"ip_address": "10.7.0.50"}]}},
                            headers=member.headers, status=409)
    assert "10.7.0.50" in resp.json["NeutronError"]["message"]
    assert [a[0] for a in allocations(api, port["id"])] == ["10.7.0.77", "10.9.0.2"]
    assert [a[0] for a in allocations(api, other["id"])] == ["10.7.0.50"]
    resp = api.app.put_json(f"{PORTS}/{port['id']}", {"port": {"mac_address": "fa:16:3e:00:00:09"}},
                            headers=member.headers, status=400)
    assert "mac_address" in resp.json["NeutronError"]["message"]


def test_delete_is_refused_while_bound_or_owned_and_frees_the_address(api):
    member = api.make_member()
    net, _ = tenant_network(api, member)
    port = create_port(api, member, network_id=net).json["port"]
    for owner, words in (("compute:nova", "bound to server vm-9"), ("network:router_interface", "owned by router"),
                         ("network:dhcp", "DHCP")):
        with api.db.begin() as session:
            session.execute(sa.update(Port).where(Port.id == port["id"]).values(device_id="vm-9", device_owner=owner))
        resp = api.app.delete(f"{PORTS}/{port['id']}", headers=member.headers, status=409)
        assert words in resp.json["NeutronError"]["message"]
    with api.db.begin() as session:
        session.execute(sa.update(Port).where(Port.id == port["id"]).values(device_id=None, device_owner=None))
    api.app.delete(f"{PORTS}/{port['id']}", headers=member.headers, status=204)
    assert allocations(api) == [] and used(api, member, "port") == 0
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(PortSecurityGroup)) == 0
    api.app.get(f"{PORTS}/{port['id']}", headers=member.headers, status=404)


def test_a_server_on_a_port_asks_for_the_ports_own_address_which_ipam_keeps_for_the_port(api):
    member = api.make_member()
    net, sub = tenant_network(api, member)
    port = create_port(api, member, network_id=net, fixed_ips=[{"ip_address": "10.7.0.33"}]).json["port"]
    flavor, image = make_flavor(api), make_image(api, member.project_id)
    body = {"server": {"name": "vm", "flavorRef": flavor["id"], "imageRef": image,
                       "networks": [{"port": port["id"]}]}}
    server = api.app.post_json("/compute/v2.1/servers", body, headers=member.headers, status=202).json["server"]
    with api.db.begin() as session:
        requested = session.get(Instance, server["id"]).requested_networks
    assert [(r["port_id"], r["subnet_id"], r["fixed_ip"]) for r in requested] == [(port["id"], sub, "10.7.0.33")]
    # What the compute worker then asks IPAM (fabric.compute.collaborators): the port's address under the
    # server's token is the port's own allocation; releasing the server's token leaves it to the port.
    ipam = IpamManager(api.settings, host="t", db=api.db)
    ctx = RequestContext.admin()
    got = ipam.allocate(ctx, f"instance:{server['id']}:0", subnet_id=sub, address="10.7.0.33", port_id=port["id"])
    assert (got["address"], got["request_token"]) == ("10.7.0.33", port_request_token(port["id"], sub))
    assert ipam.release(ctx, pool=sub, request_token=f"instance:{server['id']}:0") == []
    assert [a[0] for a in allocations(api, port["id"])] == ["10.7.0.33"]
    # A port some server holds is refused to the next one.
    with api.db.begin() as session:
        session.execute(sa.update(Port).where(Port.id == port["id"]).values(device_id=server["id"],
                                                                            device_owner="compute:nova"))
    resp = api.app.post_json("/compute/v2.1/servers", body, headers=member.headers, status=409)
    assert port["id"] in resp.json["conflictingRequest"]["message"]
