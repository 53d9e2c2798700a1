"""The L3 topology on every backend: numbering, width checks, segment endpoints, clear errors."""

from __future__ import annotations

import ipaddress

import pytest

from fabric.context import RequestContext
from fabric.exception import (
    AddressExhausted,
    Conflict,
    Invalid,
    LayoutInvalid,
    NotFound,
    NumberExhausted,
    NumberOutOfRange,
)
from tests.unit.ipam.conftest import snapshot

CTX = RequestContext.admin()


@pytest.mark.parametrize(("args", "fragment"), [
    (("10.0.0.0/8", 8, 4, 4, 6), "prefix /8 + host 8 + tenant 4 + segment 4 + endpoint 6 = 30 bits"),
    (("10.0.0.5/8", 8, 4, 4, 8), "has host bits set"),
    (("10.0.0.0/40", 8, 4, 4, 8), "is not a CIDR"),
    (("10.0.0.0/8", 8, 4, 4, 1), "endpoint_bits 1 is too small"),
    (("10.0.0.0/8", -2, 6, 4, 8), "host_bits -2 is too small"),
])
def test_bad_layouts_leave_the_database_unchanged(ipam, db, args, fragment):
    ipam.configure_datacenter(CTX, "10.0.0.0/8", 8, 4, 4, 8)
    before = snapshot(db)
    with pytest.raises(LayoutInvalid) as err:
        ipam.configure_datacenter(CTX, *args, name="other")
    assert fragment in err.value.message
    with pytest.raises(LayoutInvalid):
        ipam.configure_datacenter(CTX, *args)
    assert snapshot(db) == before


def test_layout_is_idempotent_and_frozen_once_numbered(ipam, db):
    first = ipam.configure_datacenter(CTX, "10.0.0.0/8", 8, 4, 4, 8)
    assert ipam.configure_datacenter(CTX, "10.0.0.0/8", 8, 4, 4, 8) == first
    # Nothing numbered yet: the layout may still change.
    changed = ipam.configure_datacenter(CTX, "10.0.0.0/8", 10, 4, 4, 6)
    assert changed["host_bits"] == 10 and changed["hosts"] == 1024
    ipam.add_host(CTX, "h1")
    before = snapshot(db)
    with pytest.raises(Conflict, match="remove them first"):
        ipam.configure_datacenter(CTX, "10.0.0.0/8", 8, 4, 4, 8)
    assert snapshot(db) == before


def test_hosts_tenants_segments_numbered_lowest_free_and_width_checked(ipam, db):
    ipam.configure_datacenter(CTX, "10.0.0.0/16", 3, 2, 2, 9)
    hosts = [ipam.add_host(CTX, f"h{i}", agent_address=f"192.0.2.{i}") for i in range(3)]
    assert [h["number"] for h in hosts] == [0, 1, 2]
    assert hosts[1]["block"] == "10.0.32.0/19" and hosts[1]["gateway"] == "10.0.32.0"
    assert ipam.add_host(CTX, "h1") == hosts[1]  # idempotent
    assert ipam.remove_host(CTX, "h1") == {"removed": True}
    assert ipam.remove_host(CTX, "h1") == {"removed": False}
    assert ipam.add_host(CTX, "h9")["number"] == 1  # lowest free again

    tenants = [ipam.add_tenant(CTX, f"project-{i}") for i in range(4)]
    assert [t["number"] for t in tenants] == [0, 1, 2, 3]
    before = snapshot(db)
    with pytest.raises(NumberExhausted) as err:
        ipam.add_tenant(CTX, "project-4")  # the 5th tenant when 2 bits allow 4
    assert err.value.message == ("No free tenant number in datacenter default: 2 tenant bits allow 4 (0..3) "
                                 "and all are in use.")
    with pytest.raises(NumberOutOfRange, match="host number 8 does not fit in 3 host bits; accepted: 0..7"):
        ipam.add_host(CTX, "h-big", number=8)
    with pytest.raises(NumberOutOfRange, match="segment number 4 does not fit in 2 segment bits"):
        ipam.add_segment(CTX, "project-new", "s", number=4)
    with pytest.raises(Conflict, match="host number 0 in datacenter default is already taken"):
        ipam.add_host(CTX, "h-dup", number=0)
    with pytest.raises(NotFound, match="datacenter nowhere"):
        ipam.add_host(CTX, "h", datacenter="nowhere")
    assert snapshot(db) == before

    segments = [ipam.add_segment(CTX, "project-2", f"net{i}") for i in range(4)]
    assert [s["number"] for s in segments] == [0, 1, 2, 3]
    with pytest.raises(NumberExhausted, match="segment number in tenant project-2"):
        ipam.add_segment(CTX, "project-2", "net4")
    assert [s["name"] for s in ipam.list_segments(CTX, project_id="project-2")] == ["net0", "net1", "net2", "net3"]


def test_segment_endpoints_live_in_the_hosts_block(ipam, db):
    ipam.configure_datacenter(CTX, "10.0.0.0/16", 4, 4, 4, 4)
    h0 = ipam.add_host(CTX, "h0")
    h1 = ipam.add_host(CTX, "h1")
    seg = ipam.add_segment(CTX, "tenant-x", "web")
    ipam.add_tenant(CTX, "tenant-y")
    info = ipam.describe_segment(CTX, seg["id"], "h1")
    assert info["gateway"] == "10.0.16.0" and info["service_address"] == "10.0.16.1"
    assert info["cidr"] == "10.0.16.0/28" and info["host_block"] == h1["block"] == "10.0.16.0/20"

    got = [ipam.allocate(CTX, f"e{i}", segment_id=seg["id"], host="h1") for i in range(14)]
    assert [g["address"] for g in got] == [f"10.0.16.{i}" for i in range(2, 16)]
    for g in got:
        assert ipaddress.ip_address(g["address"]) in ipaddress.ip_network(h1["block"])
        assert g["gateway"] == "10.0.16.0"
    before = snapshot(db)
    with pytest.raises(AddressExhausted) as err:
        ipam.allocate(CTX, "e14", segment_id=seg["id"], host="h1")
    assert err.value.fields["size"] == 14 and err.value.fields["in_use"] == 14
    assert snapshot(db) == before
    # Another host has its own block for the same segment.
    other = ipam.allocate(CTX, "e0", segment_id=seg["id"], host="h0")
    assert other["address"] == "10.0.0.2" and other["host_block"] == h0["block"]
    with pytest.raises(Invalid, match="a host is needed"):
        ipam.allocate(CTX, "e", segment_id=seg["id"])
    with pytest.raises(NotFound, match="host nohost"):
        ipam.allocate(CTX, "e", segment_id=seg["id"], host="nohost")
    with pytest.raises(Conflict, match="still holds 1 allocated addresses"):
        ipam.remove_host(CTX, "h0")
    ipam.release(CTX, pool=other["pool"], request_token="e0")
    assert ipam.remove_host(CTX, "h0") == {"removed": True}
    with pytest.raises(Conflict, match="still has 1 segments"):
        ipam.remove_tenant(CTX, "tenant-x")


def test_ipv6_segment_allocation(ipam, db):
    ipam.configure_datacenter(CTX, "fd00:77::/48", 16, 8, 8, 48)
    ipam.add_host(CTX, "h0")
    host = ipam.add_host(CTX, "h1")
    seg = ipam.add_segment(CTX, "tenant-6", "v6net")
    got = ipam.allocate(CTX, "e0", segment_id=seg["id"], host="h1")
    assert host["block"] == "fd00:77:0:1::/64"
    assert got["address"] == "fd00:77:0:1::2" and got["gateway"] == "fd00:77:0:1::"
    assert got["ip_version"] == 6
    assert ipam.allocate(CTX, "e1", segment_id=seg["id"], host="h1")["address"] == "fd00:77:0:1::3"
