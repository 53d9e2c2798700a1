"""Names, specs and the nftables ruleset: pure functions, no kernel."""

from __future__ import annotations

import pytest

from fabric import exception
from fabric.ipam.layout import Layout
from fabric.network import nat
from fabric.network.model import (
    EndpointSpec,
    FloatingSpec,
    HostSpec,
    HostState,
    NetworkSpec,
    RoutedSpec,
    segment_match,
)
from fabric.network.naming import Names


def test_names_fit_linux_and_are_recognised_as_fabrics():
    names = Names("fab")
    made = [names.bridge("n1"), names.vxlan("n1"), names.vlan("n1"), names.endpoint("p1"), names.gateway]
    assert all(len(n) <= 15 and names.owns(n) for n in made)
    assert len(set(made)) == len(made)
    assert names.bridge("n1") == Names("fab").bridge("n1")  # stable across processes
    assert not names.owns("fabric0") and not names.owns("eth0") and not names.owns("fabb0123")
    assert len(Names("abcd").endpoint("x" * 36)) == 15


@pytest.mark.parametrize("prefix", ["", "toolong", "Fab", "1ab", "fa-"])
def test_bad_prefix_is_refused_with_what_is_accepted(prefix):
    with pytest.raises(exception.Invalid, match="1-4 lowercase letters or digits"):
        Names(prefix)


@pytest.mark.parametrize("kwargs, message", [
    ({"network_type": "gre"}, "accepted: flat, vlan, vxlan, routed"),
    ({"network_type": "vxlan", "segmentation_id": 2**24}, "accepted: 1-16777215"),
    ({"network_type": "vlan", "segmentation_id": 4095}, "accepted: 1-4094"),
    ({"network_type": "flat"}, "names no physical_bridge"),
    ({"network_type": "vxlan", "segmentation_id": 5, "host_address": "10.0.0.300/24"}, "not an IPv4"),
    ({"network_type": "vxlan", "segmentation_id": 5, "dhcp": True}, "without a host_address"),
])
def test_bad_network_specs_name_the_value(kwargs, message):
    with pytest.raises(exception.Invalid, match=message):
        NetworkSpec(id="n1", **kwargs)


def test_bad_endpoint_and_unknown_fields_are_refused():
    with pytest.raises(exception.Invalid, match="MAC address '02:00'"):
        EndpointSpec("p1", "n1", "02:00")
    with pytest.raises(exception.Invalid, match="names no netns"):
        EndpointSpec("p1", "n1", "02:00:00:00:00:01", kind="veth")
    with pytest.raises(exception.Invalid, match=r"unknown NetworkSpec fields \['colour'\]"):
        NetworkSpec.from_dict({"id": "n1", "network_type": "routed", "colour": "red"})


def test_host_state_round_trips_through_json_data():
    state = HostState()
    state.networks["n1"] = NetworkSpec(id="n1", network_type="vxlan", segmentation_id=7)
    state.endpoints["p1"] = EndpointSpec("p1", "n1", "02:00:00:00:00:01", address="10.0.0.5")
    state.remote_hosts["h2"] = HostSpec("h2", "192.168.0.2", "10.1.16.0/20")
    state.floating["172.31.0.1"] = FloatingSpec("172.31.0.1", "10.0.0.5")
    state.routed = RoutedSpec("10.1.0.0", "10.1.0.0/20", "10.1.0.0/16")
    assert HostState.from_dict(state.to_dict()) == state


def test_segment_match_covers_tenant_and_segment_bits_only():
    layout = Layout.build("10.64.0.0/16", 4, 4, 4, 4)
    mask, value = segment_match(layout, tenant=3, segment=5)
    assert (mask, value) == ("0.0.15.240", "0.0.3.80")
    for host in (1, 7):
        address = int(layout.encode(host, 3, 5, 9))
        assert address & int(__import__("ipaddress").IPv4Address(mask)) == int(
            __import__("ipaddress").IPv4Address(value))
    with pytest.raises(exception.FabricError):
        segment_match(layout, tenant=16, segment=0)


def test_ruleset_is_deterministic_and_isolates_only_local_routed_networks():
    names = Names("fab")
    layout = Layout.build("10.64.0.0/16", 4, 4, 4, 4)
    state = HostState(routed=RoutedSpec("10.64.16.0", "10.64.16.0/20", "10.64.0.0/16"))
    for tenant in (1, 2):
        mask, value = segment_match(layout, tenant, 1)
        state.networks[f"t{tenant}"] = NetworkSpec(id=f"t{tenant}", network_type="routed",
                                                   match_mask=mask, match_value=value)
    state.networks["x"] = NetworkSpec(id="x", network_type="vxlan", segmentation_id=9)
    state.endpoints["p1"] = EndpointSpec("p1", "t1", "02:00:00:00:00:01", address=str(layout.encode(1, 1, 1, 2)))
    state.floating["172.31.0.1"] = FloatingSpec("172.31.0.1", str(layout.encode(1, 1, 1, 2)))
    ruleset = nat.build_ruleset(names, state)
    assert ruleset == nat.build_ruleset(names, state)
    assert ruleset.startswith("table ip fabfabric\ndelete table ip fabfabric\n")
    assert "ip daddr & 0.0.15.240 == 0.0.1.16 ip saddr & 0.0.15.240 != 0.0.1.16 drop" in ruleset
    assert "0.0.2.16" not in ruleset  # tenant 2 has no endpoint here
    assert ruleset.count("dnat to 10.64.17.18") == 2 and ruleset.count("snat to 172.31.0.1") == 1
    assert f'iifname "{names.bridge("x")}" oifname "fabb*" oifname != "{names.bridge("x")}" drop' in ruleset
