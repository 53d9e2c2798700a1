"""IPv6 subnets: modes checked as Neutron checks them (a 400 naming the value, nothing written),
SLAAC addresses derived from the MAC (shown in the port, in the host's endpoint and remote
group sets), DHCPv6-stateful addresses from IPAM, and what the network worker is told to serve."""

from __future__ import annotations

import ipaddress

import pytest
import sqlalchemy as sa

from fabric import exception
from fabric.db.models import Network, Port, Subnet
from fabric.network import dbstate, ipv6
from fabric.network.model import EndpointSpec, NetworkSpec
from tests.unit.api.test_ports import N, create_port, tenant_network
from tests.unit.api.test_volume_attachments import server  # noqa: F401 (the fixture)


def test_slaac_address_is_the_prefix_and_the_modified_eui64_of_the_mac():
    # RFC 4291 appendix A: the universal/local bit inverted, ff:fe in the middle.
    assert ipv6.slaac_address("2001:db8:1:2::/64", "52:54:00:12:34:56") == "2001:db8:1:2:5054:ff:fe12:3456"
    assert ipv6.slaac_address("fe80::/64", "02:00:00:00:1e:01") == "fe80::ff:fe00:1e01"


@pytest.mark.parametrize(("version", "cidr", "address_mode", "ra_mode", "dhcp", "named"), [
    (6, "fd00::/64", "stateful", None, True, "'stateful'"),
    (6, "fd00::/64", None, "radvd", True, "'radvd'"),
    (4, "10.0.0.0/24", "slaac", None, True, "ip_version 4"),
    (6, "fd00::/64", "slaac", "dhcpv6-stateful", True, "must be the same value"),
    (6, "fd00::/64", "slaac", None, False, "enable_dhcp is false"),
    (6, "fd00::/80", "slaac", "slaac", True, "fd00::/80"),
    (6, "fd00::/80", None, "dhcpv6-stateless", True, "fd00::/80"),
])
def test_invalid_mode_combinations_are_refused_naming_the_value(version, cidr, address_mode, ra_mode, dhcp, named):
    with pytest.raises(exception.Invalid) as raised:
        ipv6.check_modes(version, cidr, address_mode, ra_mode, dhcp)
    assert named in raised.value.message


def test_valid_modes_pass():
    for mode in ipv6.MODES:
        ipv6.check_modes(6, "fd00::/64", mode, mode, True)
    ipv6.check_modes(6, "fd00::/80", "dhcpv6-stateful", None, True)  # DHCPv6 hands any prefix out
    ipv6.check_modes(6, "fd00::/64", None, None, False)  # no modes: an address pool only


def subnet6(api, member, net, status=201, **fields):
    body = {"network_id": net, "ip_version": 6, "cidr": "fd00:7::/64", **fields}
    return api.app.post_json(f"{N}/subnets", {"subnet": body}, headers=member.headers, status=status)


def subnet_count(api) -> int:
    with api.db.begin() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Subnet))


def test_subnet_create_takes_modes_and_refuses_bad_ones_with_a_400_writing_nothing(api):
    member = api.make_member()
    net, _ = tenant_network(api, member)
    before = subnet_count(api)
    for fields, named in (({"ipv6_address_mode": "bogus"}, "'bogus'"),
                          ({"ipv6_address_mode": "slaac", "ipv6_ra_mode": "dhcpv6-stateful"}, "same value"),
                          ({"ipv6_ra_mode": "slaac", "cidr": "fd00:7::/96"}, "fd00:7::/96"),
                          ({"ipv6_address_mode": "slaac", "enable_dhcp": False}, "enable_dhcp")):
        refused = subnet6(api, member, net, status=400, **fields)
        assert named in refused.text
    assert subnet_count(api) == before
    made = subnet6(api, member, net, ipv6_address_mode="slaac", ipv6_ra_mode="slaac").json["subnet"]
    assert (made["ip_version"], made["ipv6_address_mode"], made["ipv6_ra_mode"]) == (6, "slaac", "slaac")
    shown = api.app.get(f"{N}/subnets/{made['id']}", headers=member.headers).json["subnet"]
    assert shown["ipv6_address_mode"] == "slaac"


def test_a_port_shows_its_slaac_address_and_holds_its_stateful_one_from_ipam(api):
    member = api.make_member()
    net, sub4 = tenant_network(api, member)
    slaac = subnet6(api, member, net, ipv6_address_mode="slaac").json["subnet"]
    port = create_port(api, member, network_id=net).json["port"]
    wanted = ipv6.slaac_address("fd00:7::/64", port["mac_address"])
    assert {(f["subnet_id"], f["ip_address"]) for f in port["fixed_ips"]} == {(sub4, "10.7.0.2"), (slaac["id"], wanted)}
    refused = create_port(api, member, status=400, network_id=net, fixed_ips=[{"subnet_id": slaac["id"]}])
    assert slaac["id"] in refused.text

    net2, _ = tenant_network(api, member, cidr="10.8.0.0/24", name="n2")
    stateful = subnet6(api, member, net2, cidr="fd00:8::/64", ipv6_address_mode="dhcpv6-stateful").json["subnet"]
    port2 = create_port(api, member, network_id=net2).json["port"]
    held = [f["ip_address"] for f in port2["fixed_ips"] if f["subnet_id"] == stateful["id"]]
    assert len(held) == 1 and ipaddress.ip_address(held[0]) in ipaddress.ip_network("fd00:8::/64")

    # What the network worker reads: each port's global IPv6 address, and the host's service.
    with api.db.begin() as session:
        rows = list(session.scalars(sa.select(Port).where(Port.id.in_([port["id"], port2["id"]]))))
        assert dbstate.ipv6_addresses(session, rows) == {port["id"]: wanted, port2["id"]: held[0]}


def test_a_port_holds_an_ipam_address_on_an_ipv6_subnet_with_no_mode(api):
    """As Neutron: a subnet with neither mode is an address pool like an IPv4 one (tempest's IPv6
    port and router tests create such subnets and expect the port to hold one of its addresses)."""
    member = api.make_member()
    net, sub4 = tenant_network(api, member)
    plain = subnet6(api, member, net, cidr="fd00:9::/64").json["subnet"]
    assert (plain["ipv6_address_mode"], plain["ipv6_ra_mode"]) == (None, None)
    port = create_port(api, member, network_id=net).json["port"]
    held = {f["subnet_id"]: f["ip_address"] for f in port["fixed_ips"]}
    assert set(held) == {sub4, plain["id"]}
    assert ipaddress.ip_address(held[plain["id"]]) in ipaddress.ip_network("fd00:9::/64")
    assert held[plain["id"]] != ipv6.slaac_address("fd00:9::/64", port["mac_address"])  # allocated, not derived


def test_a_hosts_ipv6_service_is_its_dhcp_ports_slaac_address_in_the_subnets_mode(api):
    member = api.make_member()
    net, _ = tenant_network(api, member)
    subnet6(api, member, net, ipv6_address_mode="dhcpv6-stateful", ipv6_ra_mode="dhcpv6-stateful")
    with api.db.begin() as session:
        network = session.get(Network, net)
        dhcp = Port(network_id=net, project_id=member.project_id, mac_address="fa:16:3e:00:00:01",
                    device_owner="network:dhcp", host="h1")
        session.add(dhcp)
        session.flush()
        assert dbstate.ipv6_service(session, network, None) == (None, None)
        assert dbstate.ipv6_service(session, network, dhcp) == ("fd00:7::f816:3eff:fe00:1/64", "dhcpv6-stateful")
        spec = dbstate.network_spec(session, network, "h1", None)
        assert (spec.ipv6_address, spec.ipv6_mode) == ("fd00:7::f816:3eff:fe00:1/64", "dhcpv6-stateful")


def test_specs_leave_unset_ipv6_fields_out_for_workers_of_the_previous_release():
    plain = EndpointSpec("ep", "net", "02:00:00:00:00:01", address="10.0.0.5")
    assert "address6" not in plain.to_dict() and EndpointSpec.from_dict(plain.to_dict()) == plain
    dual = EndpointSpec("ep", "net", "02:00:00:00:00:01", address="10.0.0.5", address6="fd00::5")
    assert EndpointSpec.from_dict(dual.to_dict()) == dual
    network = NetworkSpec("net", "vxlan", segmentation_id=5)
    assert not {"ipv6_address", "ipv6_mode"} & set(network.to_dict())
    with pytest.raises(exception.Invalid, match="'fd00::5'"):
        NetworkSpec("net", "vxlan", segmentation_id=5, ipv6_address="fd00::5", ipv6_mode="slaac")
    with pytest.raises(exception.Invalid, match="ipv6_mode 'stateful'"):
        NetworkSpec("net", "vxlan", segmentation_id=5, ipv6_address="fd00::5/64", ipv6_mode="stateful")


def test_a_server_shows_its_slaac_address_beside_its_allocated_one(api, server):  # noqa: F811
    """``server show`` lists what the port's fixed_ips list: the IPAM address, then the EUI-64
    address on each SLAAC subnet (read from no allocation)."""
    member, server_id = server
    net, _ = tenant_network(api, member)
    subnet6(api, member, net, ipv6_address_mode="slaac", ipv6_ra_mode="slaac")
    port = create_port(api, member, network_id=net).json["port"]
    with api.db.begin() as session:
        session.get(Port, port["id"]).device_id = server_id
    shown = api.app.get(f"/compute/v2.1/servers/{server_id}", headers=member.headers).json["server"]["addresses"]
    (listed,) = shown.values()
    assert [(a["version"], a["addr"], a["OS-EXT-IPS-MAC:mac_addr"]) for a in listed] == [
        (4, "10.7.0.2", port["mac_address"]),
        (6, ipv6.slaac_address("fd00:7::/64", port["mac_address"]), port["mac_address"])]
    assert sorted(f["ip_address"] for f in port["fixed_ips"]) == sorted(a["addr"] for a in listed)
