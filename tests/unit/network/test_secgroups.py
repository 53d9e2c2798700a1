"""Security-group rule values (their one home) and the ruleset built from them."""

from __future__ import annotations

import pytest

from fabric import exception
from fabric.network.model import EndpointSpec, HostState, NetworkSpec
from fabric.network.naming import Names
from fabric.network.secgroups import RuleSpec, SecurityState, build_ruleset, plan, rule_text, update

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
    assert rule_text(RuleSpec.checked("ingress", "IPv6", remote_group_id="g")) is None


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
