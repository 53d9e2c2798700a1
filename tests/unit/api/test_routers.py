"""Network v2.0 routers: interfaces as ports holding their subnets' gateways, one router per
subnet, external gateways with IPAM addresses, deletes refused while something depends on
them, bad input named."""

from __future__ import annotations

import sqlalchemy as sa

from fabric.api import quota
from fabric.context import RequestContext
from fabric.db.models import AddressAllocation, Port, RouterInterface
from fabric.network import dbstate, nat
from fabric.network.drivers.fake import FakeDriver
from fabric.network.manager import NetworkManager
from fabric.network.model import HostState, NetworkSpec
from fabric.network.naming import Names
from tests.unit.api.test_floating_ips import admin_h, external_network
from tests.unit.api.test_ports import tenant_network

N = "/networking/v2.0"
R = f"{N}/routers"


def make_router(api, member, status=201, **body):
    return api.app.post_json(R, {"router": {"name": "r1", **body}}, headers=member.headers, status=status)


def add(api, member, router_id, status=200, **body):
    return api.app.put_json(f"{R}/{router_id}/add_router_interface", body, headers=member.headers, status=status)


def remove(api, member, router_id, status=200, **body):
    return api.app.put_json(f"{R}/{router_id}/remove_router_interface", body, headers=member.headers,
                            status=status)


def test_a_subnet_attaches_through_a_port_holding_its_gateway(api):
    member = api.make_member()
    net, sub = tenant_network(api, member)
    router = make_router(api, member).json["router"]
    assert (router["status"], router["external_gateway_info"], router["admin_state_up"]) == ("ACTIVE", None, True)
    leg = add(api, member, router["id"], subnet_id=sub).json
    assert len(api.recorder.named("routers_changed")) == 1  # the hosts are told to realise it
    assert (leg["id"], leg["subnet_id"], leg["network_id"]) == (router["id"], sub, net)
    port = api.app.get(f"{N}/ports/{leg['port_id']}", headers=member.headers).json["port"]
    assert (port["device_owner"], port["device_id"]) == ("network:router_interface", router["id"])
    assert port["fixed_ips"] == [{"subnet_id": sub, "ip_address": "10.7.0.1"}]
    # What `openstack router show` lists as the router's interfaces.
    listed = api.app.get(f"{N}/ports?device_id={router['id']}", headers=member.headers).json["ports"]
    assert [p["id"] for p in listed] == [leg["port_id"]]
    # The gateway is the subnet's own: no IPAM allocation is made for it.
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AddressAllocation)) == 0
    # One router per subnet; the port cannot be deleted from under the router; nor the subnet or network.
    other = make_router(api, member, name="r2").json["router"]
    assert router["id"] in add(api, member, other["id"], 409, subnet_id=sub).json["NeutronError"]["message"]
    assert "owned by router" in api.app.delete(f"{N}/ports/{leg['port_id']}", headers=member.headers,
                                               status=409).json["NeutronError"]["message"]
    assert "attached to router" in api.app.delete(f"{N}/subnets/{sub}", headers=member.headers,
                                                  status=409).json["NeutronError"]["message"]
    api.app.delete(f"{N}/networks/{net}", headers=member.headers, status=409)
    msg = api.app.delete(f"{R}/{router['id']}", headers=member.headers, status=409).json["NeutronError"]["message"]
    assert "1 interface(s)" in msg
    removed = remove(api, member, router["id"], subnet_id=sub).json
    assert len(api.recorder.named("routers_changed")) == 2
    assert removed["port_id"] == leg["port_id"]
    with api.db.begin() as session:
        assert session.get(Port, leg["port_id"]) is None
        assert session.scalar(sa.select(sa.func.count()).select_from(RouterInterface)) == 0
    remove(api, member, router["id"], 404, subnet_id=sub)
    api.app.delete(f"{R}/{router['id']}", headers=member.headers, status=204)
    api.app.delete(f"{N}/subnets/{sub}", headers=member.headers, status=204)


def test_bad_interfaces_are_refused_naming_why(api):
    member = api.make_member()
    _, sub = tenant_network(api, member, "10.7.0.0/24")
    _, overlapping = tenant_network(api, member, "10.7.0.0/25", "n2")
    net3 = api.app.post_json(f"{N}/networks", {"network": {"name": "n3"}}, headers=member.headers).json["network"]
    no_gateway = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net3["id"], "cidr": "10.30.0.0/24",
                                                               "gateway_ip": None}},
                                   headers=member.headers).json["subnet"]
    _, ext_sub = external_network(api)
    router = make_router(api, member).json["router"]
    add(api, member, router["id"], subnet_id=sub)
    assert overlapping in add(api, member, router["id"], 400, subnet_id=overlapping).json["NeutronError"]["message"]
    assert "no gateway_ip" in add(api, member, router["id"], 400,
                                  subnet_id=no_gateway["id"]).json["NeutronError"]["message"]
    add(api, member, router["id"], 404, subnet_id=ext_sub)  # another project's subnet is not seen
    assert "either" in add(api, member, router["id"], 400, port_id="x",
                           subnet_id=sub).json["NeutronError"]["message"]
    assert "either" in add(api, member, router["id"], 400).json["NeutronError"]["message"]
    add(api, member, router["id"], 404, port_id="no-such-port")
    add(api, member, "no-such-router", 404, subnet_id=sub)
    other = api.make_member()
    add(api, other, router["id"], 404, subnet_id=sub)


def test_a_port_attaches_on_its_own_address_and_goes_with_its_removal(api):
    member = api.make_member()
    net, sub = tenant_network(api, member)
    router = make_router(api, member).json["router"]
    port = api.app.post_json(f"{N}/ports", {"port": {"network_id": net, "fixed_ips": [
        {"subnet_id": sub, "ip_address": "10.7.0.9"}]}}, headers=member.headers, status=201).json["port"]
    with api.db.begin() as session:
        ports_used = quota.usages(session, member.project_id)["port"]
    leg = add(api, member, router["id"], port_id=port["id"]).json
    assert (leg["port_id"], leg["subnet_id"], leg["network_id"]) == (port["id"], sub, net)
    with api.db.begin() as session:  # the router's now: its legs count against no port quota
        assert quota.usages(session, member.project_id)["port"] == ports_used - 1
    shown = api.app.get(f"{N}/ports/{port['id']}", headers=member.headers).json["port"]
    assert (shown["device_owner"], shown["device_id"]) == ("network:router_interface", router["id"])
    with api.db.begin() as session:
        assert session.get(RouterInterface, port["id"]).ip_address == "10.7.0.9"  # the router's address there
    listed = api.app.get(f"{N}/ports/{port['id']}", headers=member.headers).json["port"]["fixed_ips"]
    assert listed == [{"subnet_id": sub, "ip_address": "10.7.0.9"}]  # once, though held twice over
    # The subnet is taken now, by port or by subnet; a bound port cannot be attached.
    assert router["id"] in add(api, member, make_router(api, member, name="r2").json["router"]["id"], 409,
                               subnet_id=sub).json["NeutronError"]["message"]
    assert "in use" in add(api, member, router["id"], 409, port_id=port["id"]).json["NeutronError"]["message"]
    two = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net, "cidr": "10.8.0.0/24"}},
                            headers=member.headers).json["subnet"]
    double = api.app.post_json(f"{N}/ports", {"port": {"network_id": net, "fixed_ips": [
        {"subnet_id": sub}, {"subnet_id": two["id"]}]}}, headers=member.headers).json["port"]
    assert "2 fixed IPs" in add(api, member, router["id"], 400, port_id=double["id"]).json["NeutronError"]["message"]
    remove(api, member, router["id"], port_id=port["id"])
    api.app.get(f"{N}/ports/{port['id']}", headers=member.headers, status=404)
    with api.db.begin() as session:  # its address went back to IPAM
        assert session.scalar(sa.select(sa.func.count()).select_from(AddressAllocation)
                              .where(AddressAllocation.address.like("10.7.0.9%"))) == 0


def test_an_external_gateway_takes_an_ipam_address_and_gives_it_back(api):
    member = api.make_member()
    ext, ext_sub = external_network(api)
    net, _ = tenant_network(api, member)
    # Not external: refused naming it, nothing written.
    resp = make_router(api, member, 400, external_gateway_info={"network_id": net})
    assert net in resp.json["NeutronError"]["message"]
    assert api.app.get(R, headers=member.headers).json["routers"] == []
    router = make_router(api, member, external_gateway_info={"network_id": ext}).json["router"]
    gateway = router["external_gateway_info"]
    assert (gateway["network_id"], gateway["enable_snat"]) == (ext, True)
    assert gateway["external_fixed_ips"] == [{"subnet_id": ext_sub, "ip_address": "203.0.113.2"}]
    with api.db.begin() as session:
        held = session.execute(sa.select(AddressAllocation.address, Port.device_owner).join(
            Port, Port.id == AddressAllocation.port_id)).all()
    assert [tuple(h) for h in held] == [("203.0.113.2", "network:router_gateway")]
    # The external network cannot go while the gateway is on it.
    api.app.delete(f"{N}/networks/{ext}", headers=admin_h(api), status=409)
    shown = api.app.put_json(f"{R}/{router['id']}", {"router": {"external_gateway_info": {}, "name": "rr"}},
                             headers=member.headers).json["router"]
    assert (shown["external_gateway_info"], shown["name"]) == (None, "rr")
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AddressAllocation)) == 0
        assert session.scalar(sa.select(sa.func.count()).select_from(Port)) == 0
    # Set again (router set --external-gateway), with a named address; then the router goes with it.
    body = {"router": {"external_gateway_info": {"network_id": ext, "enable_snat": False,
                                                 "external_fixed_ips": [{"ip_address": "203.0.113.9"}]}}}
    shown = api.app.put_json(f"{R}/{router['id']}", body, headers=member.headers).json["router"]
    assert shown["external_gateway_info"]["external_fixed_ips"][0]["ip_address"] == "203.0.113.9"
    assert shown["external_gateway_info"]["enable_snat"] is False
    api.app.delete(f"{R}/{router['id']}", headers=member.headers, status=204)
    with api.db.begin() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AddressAllocation)) == 0
        assert quota.usages(session, member.project_id)["router"] == 0
    api.app.delete(f"{N}/networks/{ext}", headers=admin_h(api), status=204)


def test_router_update_refuses_what_fabric_does_not_do(api):
    member = api.make_member()
    router = make_router(api, member).json["router"]
    resp = api.app.put_json(f"{R}/{router['id']}", {"router": {"routes": [{"destination": "10.0.0.0/8",
                                                                          "nexthop": "10.7.0.9"}]}},
                            headers=member.headers, status=400)
    assert "nexthop 10.7.0.9 is not inside any subnet" in resp.json["NeutronError"]["message"]
    resp = api.app.put_json(f"{R}/{router['id']}", {"router": {"ha": True}}, headers=member.headers, status=400)
    assert "ha" in resp.json["NeutronError"]["message"]
    resp = api.app.put_json(f"{R}/{router['id']}", {"router": {"external_gateway_info": {"network_id": "nope"}}},
                            headers=member.headers, status=404)
    assert "nope" in resp.json["NeutronError"]["message"]


def test_each_host_realises_the_routers_of_the_networks_it_carries(api):
    member = api.make_member()
    net_a, sub_a = tenant_network(api, member, "10.81.0.0/24", "a")
    net_b, sub_b = tenant_network(api, member, "10.82.0.0/24", "b")
    ext, _ = external_network(api)
    router = make_router(api, member, external_gateway_info={"network_id": ext}).json["router"]
    add(api, member, router["id"], subnet_id=sub_a)
    add(api, member, router["id"], subnet_id=sub_b)
    with api.db.begin() as session:  # a guest of network a on host h1 (what compute binds)
        session.add(Port(network_id=net_a, project_id=member.project_id, mac_address="fa:16:3e:00:00:aa",
                         device_id="vm", device_owner="compute:nova", host="h1", binding={"kind": "tap"}))
    state = dbstate.host_state(api.db, "h1", api.settings)
    spec = state.routers[router["id"]]
    # h1 carries only network a: its leg there, every subnet of the router, the gateway's address.
    assert (spec.networks, spec.subnets, spec.snat_address) == ([net_a], ["10.81.0.0/24", "10.82.0.0/24"],
                                                                "203.0.113.2")
    assert HostState.from_dict(state.to_dict()).routers == state.routers
    ruleset = nat.build_ruleset(Names("fab"), state)
    assert "ip saddr 10.82.0.0/24 oifname != \"fab*\" snat to 203.0.113.2" in ruleset
    assert "\" accept" not in ruleset  # one leg here: nothing to forward between
    assert dbstate.host_state(api.db, "h2", api.settings).routers == {}
    # Down, or without SNAT, it is realised accordingly.
    api.app.put_json(f"{R}/{router['id']}", {"router": {"external_gateway_info": {"network_id": ext,
                                                                                  "enable_snat": False}}},
                     headers=member.headers)
    assert dbstate.host_state(api.db, "h1", api.settings).routers[router["id"]].snat_address is None
    api.app.put_json(f"{R}/{router['id']}", {"router": {"admin_state_up": False}}, headers=member.headers)
    assert dbstate.host_state(api.db, "h1", api.settings).routers == {}


def test_a_network_worker_told_routers_changed_realises_them_for_its_networks(api):
    member = api.make_member()
    net_a, sub_a = tenant_network(api, member, "10.81.0.0/24", "a")
    _, sub_b = tenant_network(api, member, "10.82.0.0/24", "b")
    router = make_router(api, member).json["router"]
    add(api, member, router["id"], subnet_id=sub_a)
    add(api, member, router["id"], subnet_id=sub_b)
    manager = NetworkManager(api.settings, host="h1", db=api.db, driver=FakeDriver(api.settings))
    manager.routers_changed(RequestContext.admin())
    assert manager.driver.state.routers == {}  # h1 carries neither network
    manager.driver.setup_network(NetworkSpec(id=net_a, network_type="vxlan", segmentation_id=1000))
    manager.routers_changed(RequestContext.admin())
    assert manager.driver.state.routers[router["id"]].networks == [net_a]
    remove(api, member, router["id"], subnet_id=sub_a)
    manager.routers_changed(RequestContext.admin())
    assert manager.driver.state.routers == {}
