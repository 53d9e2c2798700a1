"""Security-group rule values (their one home) and the ruleset built from them."""

from __future__ import annotations

import pytest

from fabric import exception
from fabric.config import Settings
from fabric.network import dbstate, secgroups_db
from fabric.network.ipv6 import slaac_address as ipv6_slaac
from fabric.network.model import EndpointSpec, HostState, NetworkSpec
from fabric.network.naming import Names
from fabric.network.secgroups import (
    MemberChange,
    RuleSpec,
    SecurityState,
    build_ruleset,
    link_local,
    member_update,
    plan,
    remote_set,
    rule_text,
    update,
)
from tests.unit.network.test_host_networks import add_network

NAMES = Names("f")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"direction": "sideways"}, "direction 'sideways'"),
    ({"direction": "ingress", "ethertype": "IPX"}, "ethertype 'IPX'"),
    ({"direction": "ingress", "protocol": "pigeon"}, "protocol 'pigeon'"),
    ({"direction": "ingress", "protocol": "300"}, "protocol 300 is out of range"),
    ({"direction": "ingress", "protocol": "tcp", "port_range_min": 0}, "port_range_min 0 is out of range"),
    ({"direction": "ingress", "protocol": "tcp", "port_range_min": 90, "port_range_max": 80},
     "port_range_min 90 is above port_range_max 80"),
    ({"direction": "ingress", "protocol": None, "port_range_min": 22}, "a port range needs protocol"),
    ({"direction": "ingress", "remote_ip_prefix": "10.0.0.0/33"}, "remote_ip_prefix '10.0.0.0/33'"),
    ({"direction": "ingress", "remote_ip_prefix": "::/0"}, "is not an IPv4 network"),
    ({"direction": "ingress", "remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "g"}, "exclude each other"),
])
def test_bad_rule_values_are_refused_naming_the_value(kwargs, message):
    with pytest.raises(exception.Invalid) as err:
        RuleSpec.checked(**kwargs)
    assert message in err.value.message


def test_rules_are_normalised_and_rendered():
    rule = RuleSpec.checked("ingress", "IPv4", "TCP", 22, None, "10.1.2.3/8")
    assert (rule.protocol, rule.port_range_max, rule.remote_ip_prefix) == ("tcp", 22, "10.0.0.0/8")
    assert rule_text(rule) == "meta nfproto ipv4 ip saddr 10.0.0.0/8 meta l4proto tcp tcp dport 22 accept"
    assert rule_text(RuleSpec.checked("egress", "IPv6", "ipv6-icmp", 128)) == (
        "meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 128 accept")
    assert rule_text(RuleSpec.checked("ingress", "IPv6", remote_group_id="g")) == (
        f"meta nfproto ipv6 ip6 saddr @{remote_set('g', 'IPv6')} accept")


def _host(extra_rule: bool = False, members: tuple[str, ...] = ("10.0.0.5",)) -> tuple[HostState, SecurityState]:
    state = HostState()
    state.networks["n"] = NetworkSpec(id="n", network_type="vxlan", segmentation_id=7)
    for i, address in enumerate(("10.0.0.5", "10.0.0.6")):
        state.endpoints[f"p{i}"] = EndpointSpec(f"p{i}", "n", f"02:00:00:00:00:0{i}", address)
    rules = [RuleSpec.checked("ingress", remote_group_id="g")]
    if extra_rule:
        rules.append(RuleSpec.checked("ingress", protocol="tcp", port_range_min=80))
    return state, SecurityState(groups={"g": rules}, ports={"p0": ["g"], "p1": ["g"]}, members={"g": list(members)})


def test_an_update_in_place_touches_only_the_group_and_set_that_changed():
    old, new = plan(NAMES, *_host()), plan(NAMES, *_host(extra_rule=True, members=("10.0.0.5", "10.0.0.6")))
    script = update(NAMES, old, new)
    assert script is not None and "tcp dport 80" in script and "add element" in script
    assert script.count("flush chain") == 1  # only the group's ingress chain
    assert new.full == build_ruleset(NAMES, *_host(extra_rule=True, members=("10.0.0.5", "10.0.0.6")))
    assert update(NAMES, new, new) == ""
    # A port leaving changes the skeleton: a rebuild is asked for.
    state, security = _host()
    del security.ports["p1"]
    assert update(NAMES, old, plan(NAMES, state, security)) is None


def test_ipv6_reaches_each_ports_chains_by_its_link_local_address_and_remote_groups_have_ipv6_sets():
    state, _ = _host()
    rules = [RuleSpec.checked("ingress", "IPv6", remote_group_id="g"), RuleSpec.checked("egress", "IPv6")]
    lla = {i: link_local(f"02:00:00:00:00:0{i}") for i in (0, 1)}
    security = SecurityState(groups={"g": rules}, ports={"p0": ["g"], "p1": ["g"]},
                             members={"g": ["10.0.0.6", lla[1], "10.0.0.5", lla[0]]})
    made = plan(NAMES, state, security)
    text = made.full
    assert lla[0] == "fe80::ff:fe00:0"  # EUI-64 of 02:00:00:00:00:00 (the U/L bit flipped)
    bridge = NAMES.bridge("n")
    assert f'"{bridge}" . {lla[0]} : jump e' in text and f'"{bridge}" . {lla[1]} : jump i' in text
    assert "iifname . ip6 saddr vmap @eports6" in text and "oifname . ip6 daddr vmap @iports6" in text
    # Only the IPv6 set is made (no IPv4 rule names the group), with the members' IPv6 addresses.
    assert made.sets == {remote_set("g", "IPv6"): sorted(lla.values())}
    assert f"set {remote_set('g', 'IPv6')} {{ type ipv6_addr; elements = " in text
    assert f"set {remote_set('g', 'IPv4')} " not in text
    # Neighbour discovery passes before any port's chain (which drops invalid packets); a
    # port's router advertisement does not.
    egress = text[text.index("chain egress {"):text.index("chain egress_local {")]
    assert egress.index("nd-neighbor-advert") < egress.index("vmap @eports6") and "nd-router-advert" not in egress
    # The rebuild is what the split plan says, and an IPv6 membership change is an in-place update.
    assert text == build_ruleset(NAMES, state, security)
    fewer = SecurityState(groups=security.groups, ports=security.ports, members={"g": ["10.0.0.5", lla[0]]})
    assert update(NAMES, made, plan(NAMES, state, fewer)) == (
        f"flush set inet fsg {remote_set('g', 'IPv6')}\nadd element inet fsg {remote_set('g', 'IPv6')} "
        f"{{ {lla[0]} }}\n")


def test_a_remote_groups_members_are_known_by_their_ipv4_and_link_local_addresses(sqlite_db):
    add_network(sqlite_db)  # guest-2 on h2 holds 10.62.0.12
    group = secgroups_db.ensure_default_group(sqlite_db, "proj")  # ingress from itself, IPv4 and IPv6
    secgroups_db.bind_port_groups(sqlite_db, "guest-2", "proj", None)
    security = dbstate.security_state(sqlite_db, "h2")
    assert security.ports == {"guest-2": [group]}
    assert security.members == {group: ["10.62.0.12", link_local("02:00:00:00:62:02")]}
    state = dbstate.host_state(sqlite_db, "h2", Settings().replace(default={"host": "h2"}))
    made = plan(NAMES, state, security)
    assert made.sets == {remote_set(group, "IPv4"): ["10.62.0.12"],
                         remote_set(group, "IPv6"): [link_local("02:00:00:00:62:02")]}


def test_a_port_never_answers_as_a_dhcp_server_and_may_send_from_its_global_ipv6_address():
    routed = NetworkSpec("r", "routed")
    l2 = NetworkSpec("n", "vxlan", segmentation_id=7)
    state = HostState(networks={"r": routed, "n": l2}, endpoints={
        "pr": EndpointSpec("pr", "r", "02:00:00:00:00:0a", address="10.1.0.5"),
        "pl": EndpointSpec("pl", "n", "02:00:00:00:00:0b", address="10.0.0.5", address6="fd00::5")})
    text = build_ruleset(NAMES, state, SecurityState(groups={}, ports={"pr": [], "pl": []}, members={}))
    routed_device = NAMES.endpoint("pr")
    for server in ("udp sport 67 udp dport 68", "udp sport 547 udp dport 546"):
        assert f'iifname "{routed_device}" {server} drop' in text  # routed: by device, in the inet table
        assert text.count(f"    {server} drop") == 1  # L2: in the port's bridge chain
    assert f"ip6 saddr != {{ {link_local('02:00:00:00:00:0b')}, fd00::5, :: }} drop" in text
    assert f'"{NAMES.bridge("n")}" . fd00::5 : jump e' in text
    assert "udp sport 546 udp dport 547 accept" in text and "udp sport 547 udp dport 546 accept" in text


def test_remote_members_give_each_groups_addresses_by_version_and_value(sqlite_db):
    """Two groups sharing a member; members holding IPv4 and allocated IPv6, IPv4 and a SLAAC
    address, and nothing but their link-local address (one read, however many members)."""
    from fabric.db.models import AddressAllocation, AddressPool, Network, Port, PortSecurityGroup, SecurityGroup, Subnet

    with sqlite_db.begin() as session:
        session.add_all([Network(id="n-a", project_id="proj", network_type="vxlan", segmentation_id=701),
                         Network(id="n-b", project_id="proj", network_type="vxlan", segmentation_id=702)])
        session.add_all([
            Subnet(id="s-a", network_id="n-a", project_id="proj", ip_version=4, cidr="10.71.0.0/24"),
            Subnet(id="s-a6", network_id="n-a", project_id="proj", ip_version=6, cidr="fd00:71::/64",
                   ipv6_address_mode="slaac", ipv6_ra_mode="slaac"),
            Subnet(id="s-b", network_id="n-b", project_id="proj", ip_version=4, cidr="10.72.0.0/24"),
            Subnet(id="s-b6", network_id="n-b", project_id="proj", ip_version=6, cidr="fd00:72::/64",
                   ipv6_address_mode="dhcpv6-stateful", ipv6_ra_mode="dhcpv6-stateful")])
        groups = [SecurityGroup(id=f"g{n}", project_id="proj", name=f"g{n}", description="") for n in (1, 2, 3)]
        session.add_all(groups)
        session.flush()
        session.add_all([
            Port(id="slaac", network_id="n-a", project_id="proj", mac_address="02:00:00:00:71:09", host="h1"),
            Port(id="stateful", network_id="n-b", project_id="proj", mac_address="02:00:00:00:72:03", host="h2"),
            Port(id="bare", network_id="n-b", project_id="proj", mac_address="02:00:00:00:72:0a", host="h3")])
        session.add_all([AddressPool(id=s, kind="subnet", subnet_id=s, definition={}, size_limit=250)
                         for s in ("s-a", "s-b", "s-b6")])
        session.flush()
        session.add_all([
            AddressAllocation(pool_id="s-a", address="10.71.0.9", request_token="t1", port_id="slaac"),
            AddressAllocation(pool_id="s-b", address="10.72.0.3", request_token="t2", port_id="stateful"),
            AddressAllocation(pool_id="s-b6", address="fd00:72::5", request_token="t3", port_id="stateful"),
            PortSecurityGroup(port_id="slaac", security_group_id="g1"),
            PortSecurityGroup(port_id="slaac", security_group_id="g2"),
            PortSecurityGroup(port_id="stateful", security_group_id="g1"),
            PortSecurityGroup(port_id="bare", security_group_id="g2")])
    with sqlite_db.begin() as session:
        members = dbstate.remote_members(session, ["g1", "g2", "g3"])
    slaac = ipv6_slaac("fd00:71::/64", "02:00:00:00:71:09")
    assert members == {
        "g1": ["10.71.0.9", "10.72.0.3", slaac, "fd00:72::5", link_local("02:00:00:00:71:09"),
               link_local("02:00:00:00:72:03")],
        "g2": ["10.71.0.9", slaac, link_local("02:00:00:00:71:09"), link_local("02:00:00:00:72:0a")],
        "g3": []}


def test_member_changes_touch_one_ports_addresses_and_an_address_two_members_share_stays():
    ll = link_local("02:00:00:00:00:0a")
    security = SecurityState(groups={"g": [RuleSpec.checked("ingress", remote_group_id="g")]}, ports={"p0": ["g"]},
                             members={"g": ["10.0.0.5", "10.0.0.9"], "h": []},
                             member_ports={"g": {"p0": ("10.0.0.5",), "q": ("10.0.0.9",)}, "h": {}})
    # r joins g (and the untracked group x: nothing there) with the address q holds too.
    made = security.change_members([("r", ["g", "x"], ("10.0.0.9", ll))])
    assert made == {"g": MemberChange(added=[ll], removed=[])}
    assert security.members == {"g": ["10.0.0.5", "10.0.0.9", "10.0.0.9", ll], "h": []}
    # q leaves: 10.0.0.9 stays (r holds it). r moves from g to h, then p0 leaves and comes back:
    # applied together, only what differs at the end is reported.
    made = security.change_members([("q", [], ()), ("r", ["h"], ("10.0.0.9", ll)),
                                    ("p0", [], ()), ("p0", ["g"], ("10.0.0.5",))])
    assert made == {"g": MemberChange(added=[], removed=["10.0.0.9", ll]),
                    "h": MemberChange(added=["10.0.0.9", ll], removed=[])}
    assert security.members == {"g": ["10.0.0.5"], "h": ["10.0.0.9", ll]}
    assert security.member_ports == {"g": {"p0": ("10.0.0.5",)}, "h": {"r": ("10.0.0.9", ll)}}
    assert security.change_members([("r", ["h"], ("10.0.0.9", ll))]) == {}  # a repeat changes nothing


def test_a_member_update_adds_and_deletes_only_the_changed_elements_and_leaves_what_a_plan_makes():
    state, security = _host(members=("10.0.0.5", "10.0.0.6"))
    security.member_ports = {"g": {"p0": ("10.0.0.5",), "p1": ("10.0.0.6",)}}
    security.groups["g"].append(RuleSpec.checked("ingress", "IPv6", remote_group_id="g"))  # an IPv6 set too
    applied = plan(NAMES, state, security)
    made = security.change_members([("p1", [], ()), ("far", ["g"], ("10.0.0.7", "fe80::1"))])
    script, sets = member_update(NAMES, applied, made)
    v4, v6 = remote_set("g", "IPv4"), remote_set("g", "IPv6")
    assert script == (f"delete element inet fsg {v4} {{ 10.0.0.6 }}\nadd element inet fsg {v4} {{ 10.0.0.7 }}\n"
                      f"add element inet fsg {v6} {{ fe80::1 }}\n")
    applied.sets.update(sets)
    assert applied == plan(NAMES, state, security)  # as a rebuild from the changed state would be
    assert member_update(NAMES, applied, {"other": MemberChange(added=["10.9.9.9"], removed=[])}) == ("", {})


def test_a_read_given_the_members_it_holds_reads_only_the_other_remote_groups(sqlite_db):
    add_network(sqlite_db)  # guest-2 on h2 holds 10.62.0.12
    default = secgroups_db.ensure_default_group(sqlite_db, "proj")  # ingress from itself
    secgroups_db.bind_port_groups(sqlite_db, "guest-2", "proj", None)
    held = SecurityState(members={default: ["10.9.9.9"], "gone": []},
                         member_ports={default: {"elsewhere": ("10.9.9.9",)}, "gone": {}})
    kept = dbstate.security_state(sqlite_db, "h2", known=held)
    # The default group's members are the ones held (kept current by announcements, not re-read);
    # a group no rule names any more is dropped.
    assert kept.members == {default: ["10.9.9.9"]} and kept.member_ports == {default: {"elsewhere": ("10.9.9.9",)}}
    assert kept.ports == dbstate.security_state(sqlite_db, "h2").ports == {"guest-2": [default]}
    # Without them, the group's members are read.
    read = dbstate.security_state(sqlite_db, "h2", known=SecurityState())
    assert read.members == {default: ["10.62.0.12", link_local("02:00:00:00:62:02")]}
