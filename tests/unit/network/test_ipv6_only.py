"""IPv6-only networks and DHCPv6-stateful NICs on the compute side of a boot (a NIC that names only
its network): which subnets its addresses come from, the host's DHCP port, and what the host's
network worker is then told to serve (its dnsmasq entries, its anti-spoofing and filtering)."""

from __future__ import annotations

import sqlalchemy as sa

from fabric.compute.collaborators import IpamAddresses, dhcp_port_id, mac_for, port_id_for
from fabric.config import Settings
from fabric.context import RequestContext
from fabric.db.models import Network, Port, Subnet
from fabric.ipam.manager import IpamManager
from fabric.network import dbstate
from fabric.network.drivers.linux import LinuxDriver
from fabric.network.ipv6 import slaac_address
from fabric.network.naming import Names
from fabric.network.secgroups import RuleSpec, SecurityState, build_ruleset, link_local
from fabric.reconcile import addresses as address_drift

STATEFUL = {"ipv6_address_mode": "dhcpv6-stateful", "ipv6_ra_mode": "dhcpv6-stateful"}
SLAAC = {"ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac"}


class Ipam:
    """The real IPAM manager (in process, on the test's database), keeping every call compute makes."""

    def __init__(self, db) -> None:
        self.manager, self.calls = IpamManager(Settings(), host="ipam", db=db), []

    def allocate(self, ctx, token, **kwargs):
        self.calls.append(("allocate", token, kwargs["subnet_id"], kwargs["port_id"]))
        return self.manager.allocate(ctx, token, **kwargs)

    def release(self, ctx, **kwargs):
        self.calls.append(("release", kwargs))
        return self.manager.release(ctx, **kwargs)


def addresses_on(db, *subnets: Subnet) -> IpamAddresses:
    with db.begin() as session:
        session.add(Network(id="n", project_id="p", network_type="vxlan", segmentation_id=9))
        for subnet in subnets:
            session.add(subnet)
    addresses = IpamAddresses.__new__(IpamAddresses)
    addresses.api, addresses.db = Ipam(db), db
    return addresses


INSTANCE = {"id": "i1", "host": "h1", "project_id": "p", "availability_zone": None}


def test_a_nic_on_a_slaac_only_network_takes_no_address_and_its_host_gets_an_addressless_dhcp_port(sqlite_db):
    addresses = addresses_on(sqlite_db, Subnet(id="s6", network_id="n", project_id="p", ip_version=6,
                                               cidr="fd00:9::/64", gateway_ip="fd00:9::1", **SLAAC))
    vif = addresses.allocate(RequestContext(), INSTANCE, 0, {"network_id": "n"})
    assert (vif["subnet_id"], vif["address"], vif["pool"]) == (None, None, None)
    assert addresses.api.calls == []  # nothing from IPAM: the address is the EUI-64 of the MAC
    with sqlite_db.begin() as session:
        dhcp = session.get(Port, dhcp_port_id("n", "h1"))
        assert (dhcp.device_owner, dhcp.host) == ("network:dhcp", "h1")
        ports = list(session.scalars(sa.select(Port).where(Port.id == vif["id"])))
        assert dbstate.ipv6_addresses(session, ports) == {vif["id"]: slaac_address("fd00:9::/64", mac_for("i1", 0))}
        spec = dbstate.network_spec(session, session.get(Network, "n"), "h1", None)
        assert (spec.host_address, spec.dhcp, spec.ipv6_mode) == (None, False, "slaac")
        assert spec.ipv6_address == f"{slaac_address('fd00:9::/64', dhcp.mac_address)}/64"
    # Addressless is how it should be there: the address reconciler finds nothing to report.
    assert [f.line() for f in address_drift.find(sqlite_db)] == []
    # A second NIC on the host finds its DHCP port there.
    addresses.allocate(RequestContext(), INSTANCE, 1, {"network_id": "n"})
    addresses.release(RequestContext(), INSTANCE, 0, vif)
    assert addresses.api.calls == [("release", {"port_id": vif["id"]})]


def test_a_nic_on_a_stateful_only_network_takes_its_ipv6_address_and_dnsmasq_serves_it_by_mac(sqlite_db):
    addresses = addresses_on(sqlite_db, Subnet(id="s6", network_id="n", project_id="p", ip_version=6,
                                               cidr="fd00:9::/64", gateway_ip="fd00:9::1", **STATEFUL))
    vif = addresses.allocate(RequestContext(), INSTANCE, 0, {"network_id": "n"})
    assert (vif["subnet_id"], vif["address"], vif["pool"]) == ("s6", "fd00:9::2", "s6")
    assert addresses.api.calls == [("allocate", "instance:i1:0", "s6", port_id_for("i1", 0))]
    settings = Settings()
    state = dbstate.host_state(sqlite_db, "h1", settings)
    endpoint = state.endpoints[vif["id"]]
    assert (endpoint.address, endpoint.address6) == (None, "fd00:9::2")
    driver = LinuxDriver(settings, state_dir="/nonexistent")  # wanted_dhcp reads only its state
    driver.state = state
    assert driver.wanted_dhcp() == {"n": {(mac_for("i1", 0), "[fd00:9::2]")}}


def test_a_nic_on_a_dual_stack_network_takes_its_ipv4_and_its_stateful_ipv6_address(sqlite_db):
    addresses = addresses_on(sqlite_db,
                             Subnet(id="s6", network_id="n", project_id="p", ip_version=6, cidr="fd00:9::/64", gateway_ip="fd00:9::1",
                                    **STATEFUL),
                             Subnet(id="s4", network_id="n", project_id="p", ip_version=4, cidr="10.9.0.0/24", gateway_ip="10.9.0.1"))
    vif = addresses.allocate(RequestContext(), INSTANCE, 0, {"network_id": "n"})
    assert (vif["address"], vif["pool"], vif["address6"], vif["pool6"]) == ("10.9.0.2", "s4", "fd00:9::2", "s6")
    port = port_id_for("i1", 0)
    assert addresses.api.calls[:2] == [("allocate", "instance:i1:0", "s4", port),
                                       ("allocate", "instance:i1:0:v6", "s6", port)]
    driver = LinuxDriver(Settings(), state_dir="/nonexistent")
    driver.state = dbstate.host_state(sqlite_db, "h1", Settings())
    assert driver.wanted_dhcp() == {"n": {(mac_for("i1", 0), "10.9.0.2,[fd00:9::2]")}}
    addresses.release(RequestContext(), INSTANCE, 0, vif)
    assert addresses.api.calls[-2:] == [("release", {"pool": "s6", "request_token": "instance:i1:0:v6"}),
                                        ("release", {"pool": "s4", "request_token": "instance:i1:0"})]


def test_an_ipv6_only_port_is_filtered_by_its_ipv6_addresses_alone(sqlite_db):
    addresses = addresses_on(sqlite_db, Subnet(id="s6", network_id="n", project_id="p", ip_version=6,
                                               cidr="fd00:9::/64", gateway_ip="fd00:9::1", **SLAAC))
    vif = addresses.allocate(RequestContext(), INSTANCE, 0, {"network_id": "n"})
    state = dbstate.host_state(sqlite_db, "h1", Settings())
    mac = mac_for("i1", 0)
    security = SecurityState(groups={"g": [RuleSpec.checked("ingress", "IPv6", "icmp")]}, ports={vif["id"]: ["g"]})
    text = build_ruleset(Names("fab"), state, security)
    own = slaac_address("fd00:9::/64", mac)
    assert f"ip6 saddr != {{ {link_local(mac)}, {own}, :: }} drop" in text  # its own v6 addresses only
    assert "ether type ip drop" in text  # no IPv4 address: it sends no IPv4 but its DHCP discovery
    assert f". {own} : jump" in text and "meta nfproto ipv6 meta l4proto ipv6-icmp accept" in text
    assert "ipv4_addr : verdict; elements" not in text  # nothing found by an IPv4 address
