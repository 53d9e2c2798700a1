"""Network v2.0 as tempest's interoperability run asks: subnet host routes and DHCP on
update, external networks and their subnets seen by every project, the ``?fields=``
selector, bulk port create (all or nothing), Neutron's overlap message (tempest looks for it
to try the next CIDR), router extra routes, and Neutron's words for a bad port range."""

from __future__ import annotations

import sqlalchemy as sa

from fabric.api import quota
from fabric.db.models import AddressAllocation, Port
from tests.unit.api.test_floating_ips import external_network
from tests.unit.api.test_ports import tenant_network

N = "/networking/v2.0"


def test_subnet_host_routes_are_stored_shown_and_updated_with_dhcp(api):
    member = api.make_member()
    net = api.app.post_json(f"{N}/networks", {"network": {"name": "n"}}, headers=member.headers).json["network"]
    routes = [{"destination": "10.20.0.0/16", "nexthop": "10.7.0.9"}]
    sub = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.7.0.0/24",
                                                        "host_routes": routes}}, headers=member.headers).json
    assert sub["subnet"]["host_routes"] == routes
    sub_id = sub["subnet"]["id"]
    new = [{"destination": "10.30.0.0/16", "nexthop": "10.7.0.10"}]
    updated = api.app.put_json(f"{N}/subnets/{sub_id}", {"subnet": {"host_routes": new, "enable_dhcp": False}},
                               headers=member.headers).json["subnet"]
    assert (updated["host_routes"], updated["enable_dhcp"]) == (new, False)
    shown = api.app.get(f"{N}/subnets/{sub_id}", headers=member.headers).json["subnet"]
    assert (shown["host_routes"], shown["enable_dhcp"]) == (new, False)
    bad = api.app.put_json(f"{N}/subnets/{sub_id}", {"subnet": {"host_routes": [
        {"destination": "10.40.0.0/16", "nexthop": "fe80::1"}]}}, headers=member.headers, status=400)
    assert "not IPv4" in bad.json["NeutronError"]["message"]
    bad = api.app.put_json(f"{N}/subnets/{sub_id}", {"subnet": {"host_routes": [
        {"destination": "nowhere", "nexthop": "10.7.0.1"}]}}, headers=member.headers, status=400)
    assert "nowhere" in bad.json["NeutronError"]["message"]


def test_external_networks_and_their_subnets_are_seen_by_every_project(api):
    member = api.make_member()
    ext, ext_subnet = external_network(api)
    own, _ = tenant_network(api, member)
    listed = api.app.get(f"{N}/networks?router:external=true", headers=member.headers).json["networks"]
    assert [n["id"] for n in listed] == [ext]
    listed = api.app.get(f"{N}/networks?router:external=false", headers=member.headers).json["networks"]
    assert [n["id"] for n in listed] == [own]
    subnets = api.app.get(f"{N}/subnets?network_id={ext}", headers=member.headers).json["subnets"]
    assert [s["id"] for s in subnets] == [ext_subnet]
    api.app.get(f"{N}/subnets/{ext_subnet}", headers=member.headers, status=200)
    aliases = [e["alias"] for e in api.app.get(f"{N}/extensions", headers=member.headers).json["extensions"]]
    assert "subnet-external-network" in aliases


def test_the_fields_selector_on_networks_subnets_and_ports(api):
    member = api.make_member()
    net_id, sub_id = tenant_network(api, member)
    port = api.app.post_json(f"{N}/ports", {"port": {"network_id": net_id}}, headers=member.headers).json["port"]
    for collection, key, ident in (("networks", "network", net_id), ("subnets", "subnet", sub_id),
                                   ("ports", "port", port["id"])):
        listed = api.app.get(f"{N}/{collection}?fields=id&fields=name", headers=member.headers).json[collection]
        assert [sorted(doc) for doc in listed] == [["id", "name"]]
        shown = api.app.get(f"{N}/{collection}/{ident}?fields=id,tenant_id", headers=member.headers).json[key]
        assert shown == {"id": ident, "tenant_id": member.project_id}
        assert "status" in api.app.get(f"{N}/{collection}/{ident}", headers=member.headers).json[key] \
            or key == "subnet"


def test_bulk_port_create_is_all_or_nothing(api):
    member = api.make_member()
    first, _ = tenant_network(api, member, name="a")
    second, _ = tenant_network(api, member, cidr="10.8.0.0/24", name="b")
    made = api.app.post_json(f"{N}/ports", {"ports": [{"network_id": first}, {"network_id": second}]},
                             headers=member.headers, status=201).json["ports"]
    assert [p["network_id"] for p in made] == [first, second] and all(p["admin_state_up"] for p in made)
    assert all(p["fixed_ips"] for p in made)
    with api.db.begin() as session:
        before = (session.scalar(sa.select(sa.func.count()).select_from(Port)),
                  session.scalar(sa.select(sa.func.count()).select_from(AddressAllocation)),
                  quota.usages(session, member.project_id)["port"])
    refused = api.app.post_json(f"{N}/ports", {"ports": [{"network_id": first}, {"network_id": "no-such-net"}]},
                                headers=member.headers, status=404)
    assert "no-such-net" in refused.json["NeutronError"]["message"]
    with api.db.begin() as session:
        after = (session.scalar(sa.select(sa.func.count()).select_from(Port)),
                 session.scalar(sa.select(sa.func.count()).select_from(AddressAllocation)),
                 quota.usages(session, member.project_id)["port"])
    assert after == before


def test_overlapping_subnets_on_different_networks_and_the_message_on_one(api):
    member = api.make_member()
    first, _ = tenant_network(api, member, name="a")
    tenant_network(api, member, name="b")  # the same CIDR on another network of the project: allowed
    refused = api.app.post_json(f"{N}/subnets", {"subnet": {"network_id": first, "cidr": "10.7.0.0/25"}},
                                headers=member.headers, status=400)
    assert "overlaps with another subnet" in refused.json["NeutronError"]["message"]


def test_router_extra_routes_need_a_nexthop_in_one_of_its_subnets(api):
    member = api.make_member()
    _, sub = tenant_network(api, member)
    router = api.app.post_json(f"{N}/routers", {"router": {"name": "r"}}, headers=member.headers).json["router"]
    api.app.put_json(f"{N}/routers/{router['id']}/add_router_interface", {"subnet_id": sub}, headers=member.headers)
    routes = [{"destination": "10.50.0.0/16", "nexthop": "10.7.0.2"}]
    updated = api.app.put_json(f"{N}/routers/{router['id']}", {"router": {"routes": routes}},
                               headers=member.headers).json["router"]
    assert updated["routes"] == routes
    assert api.app.get(f"{N}/routers/{router['id']}", headers=member.headers).json["router"]["routes"] == routes
    refused = api.app.put_json(f"{N}/routers/{router['id']}", {"router": {"routes": [
        {"destination": "10.60.0.0/16", "nexthop": "10.9.0.2"}]}}, headers=member.headers, status=400)
    assert "nexthop 10.9.0.2" in refused.json["NeutronError"]["message"]
    assert api.app.get(f"{N}/routers/{router['id']}", headers=member.headers).json["router"]["routes"] == routes
    cleared = api.app.put_json(f"{N}/routers/{router['id']}", {"router": {"routes": None}},
                               headers=member.headers).json["router"]
    assert cleared["routes"] == []


def test_a_bad_port_range_says_so_in_neutrons_words(api):
    member = api.make_member()
    group = api.app.post_json(f"{N}/security-groups", {"security_group": {"name": "g"}},
                              headers=member.headers).json["security_group"]
    for protocol, low, high, words in (
            ("tcp", -16, 80, "Invalid value for port -16"), ("tcp", 80, 65536, "Invalid value for port 65536"),
            ("tcp", 80, 79, "port_range_min must be <= port_range_max"),
            ("tcp", None, 6, "port_range_min must be <= port_range_max"),
            ("icmp", 1, 256, "Invalid value for ICMP code"), ("icmp", -1, 25, "Invalid value for ICMP type"),
            ("icmp", None, 6, "ICMP type (port-range-min) is missing"),
            ("icmp", 300, 1, "Invalid value for ICMP type")):
        refused = api.app.post_json(f"{N}/security-group-rules", {"security_group_rule": {
            "security_group_id": group["id"], "direction": "ingress", "protocol": protocol, "port_range_min": low,
            "port_range_max": high}}, headers=member.headers, status=400)
        assert words in refused.json["NeutronError"]["message"], (protocol, low, high)


def test_an_icmp_rule_shows_the_protocol_name_it_was_given_and_is_enforced_by_its_ethertype(api):
    """Neutron shows ``ipv6-icmp`` as given (tempest compares it); whichever ICMP name a rule gives,
    its ethertype decides what it allows, and another ICMP name for the same rule is a duplicate."""
    from fabric.db.models import SecurityGroupRule
    from fabric.network import dbstate

    member = api.make_member()
    group = api.app.post_json(f"{N}/security-groups", {"security_group": {"name": "g"}},
                              headers=member.headers).json["security_group"]

    def rule(protocol, status=201):
        return api.app.post_json(f"{N}/security-group-rules", {"security_group_rule": {
            "security_group_id": group["id"], "direction": "ingress", "ethertype": "IPv6", "protocol": protocol,
            "port_range_min": 128, "port_range_max": 0}}, headers=member.headers, status=status)

    made = rule("ipv6-icmp").json["security_group_rule"]
    assert made["protocol"] == "ipv6-icmp"
    shown = api.app.get(f"{N}/security-group-rules/{made['id']}", headers=member.headers).json
    assert shown["security_group_rule"]["protocol"] == "ipv6-icmp"
    listed = api.app.get(f"{N}/security-group-rules?protocol=ipv6-icmp", headers=member.headers).json
    assert [r["id"] for r in listed["security_group_rules"]] == [made["id"]]
    assert made["id"] in rule("icmpv6", status=409).json["NeutronError"]["message"]
    with api.db.begin() as session:
        enforced = dbstate.rule_spec(session.get(SecurityGroupRule, made["id"]))
    assert (enforced.protocol, enforced.port_range_min, enforced.port_range_max) == ("icmpv6", 128, 0)
