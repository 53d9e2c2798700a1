"""The L3 bit layout: properties over every (host, tenant, segment, endpoint), IPv4 and IPv6."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.exception import LayoutInvalid, NumberOutOfRange
from fabric.ipam.layout import FIRST_ENDPOINT_OFFSET, Layout


@st.composite
def layouts(draw, version: int) -> Layout:
    """A random valid layout: a prefix and four widths that fill the address exactly."""
    total = 32 if version == 4 else 128
    prefixlen = draw(st.integers(1, total - 8 if version == 4 else 96))
    free = total - prefixlen
    endpoint = draw(st.integers(2, min(free, 64)))
    rest = free - endpoint
    host = draw(st.integers(0, rest))
    tenant = draw(st.integers(0, rest - host))
    segment = rest - host - tenant
    top = draw(st.integers(0, (1 << prefixlen) - 1))
    network = top << (total - prefixlen)
    address = ipaddress.IPv4Address(network) if version == 4 else ipaddress.IPv6Address(network)
    return Layout.build(f"{address}/{prefixlen}", host, tenant, segment, endpoint)


@st.composite
def layout_and_numbers(draw, version: int):
    layout = draw(layouts(version))
    numbers = tuple(draw(st.integers(0, (1 << layout.bits(f)) - 1)) for f in ("host", "tenant", "segment", "endpoint"))
    return layout, numbers


@pytest.mark.parametrize("version", [4, 6])
def test_every_number_round_trips_inside_its_blocks(version):
    @settings(max_examples=300, deadline=None)
    @given(layout_and_numbers(version))
    def check(case):
        layout, (host, tenant, segment, endpoint) = case
        address = layout.encode(host, tenant, segment, endpoint)
        assert address.version == version
        assert layout.decode(str(address)) == (host, tenant, segment, endpoint)
        assert address in layout.prefix
        assert address in layout.host_block(host)
        assert address in layout.tenant_block(host, tenant)
        assert address in layout.segment_block(host, tenant, segment)
        assert layout.host_block(host).prefixlen == layout.prefix.prefixlen + layout.host_bits
        assert layout.host_block(host).subnet_of(layout.prefix)

    check()


@pytest.mark.parametrize("version", [4, 6])
def test_distinct_numbers_give_distinct_addresses(version):
    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def check(data):
        layout, a = data.draw(layout_and_numbers(version))
        b = tuple(data.draw(st.integers(0, (1 << layout.bits(f)) - 1))
                  for f in ("host", "tenant", "segment", "endpoint"))
        same_address = layout.encode(*a) == layout.encode(*b)
        assert same_address == (a == b)
        # Two hosts' blocks never overlap: each is one aggregatable route.
        if a[0] != b[0]:
            assert not layout.host_block(a[0]).overlaps(layout.host_block(b[0]))
            assert layout.encode(*b) not in layout.host_block(a[0])

    check()


@pytest.mark.parametrize("version", [4, 6])
def test_reserved_offsets_and_endpoint_range(version):
    @settings(max_examples=100, deadline=None)
    @given(layout_and_numbers(version))
    def check(case):
        layout, (host, tenant, segment, _) = case
        block = layout.segment_block(host, tenant, segment)
        assert layout.gateway(host, tenant, segment) == block.network_address
        assert int(layout.service_address(host, tenant, segment)) == int(block.network_address) + 1
        first, last = layout.endpoint_range(host, tenant, segment)
        assert first == int(block.network_address) + FIRST_ENDPOINT_OFFSET
        assert last == int(block.broadcast_address)
        assert layout.capacity("endpoint") == last - first + 1

    check()


def test_small_ipv4_layout_exhaustively():
    layout = Layout.build("10.0.0.0/24", 2, 2, 1, 3)
    seen = {}
    for h in range(4):
        for t in range(4):
            for s in range(2):
                for e in range(8):
                    address = layout.encode(h, t, s, e)
                    assert address not in seen
                    seen[address] = (h, t, s, e)
                    assert layout.decode(address) == (h, t, s, e)
    assert len(seen) == 256
    assert str(layout.host_block(3)) == "10.0.0.192/26"
    assert str(layout.segment_block(1, 2, 1)) == "10.0.0.104/29"
    assert str(layout.gateway(1, 2, 1)) == "10.0.0.104"
    assert str(layout.service_address(1, 2, 1)) == "10.0.0.105"


def test_ipv6_layout_example():
    layout = Layout.build("fd00:10::/48", 16, 8, 8, 48)
    assert str(layout.host_block(5)) == "fd00:10:0:5::/64"
    assert str(layout.encode(5, 1, 2, 7)) == "fd00:10:0:5:102::7"
    assert layout.decode("fd00:10:0:5:102::7") == (5, 1, 2, 7)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("10.0.0.0/8", 8, 4, 4, 6), "prefix /8 + host 8 + tenant 4 + segment 4 + endpoint 6 = 30 bits, but an IPv4 address has 32"),
        (("10.0.0.0/8", 8, 4, 4, 10), "= 34 bits"),
        (("fd00::/48", 16, 8, 8, 40), "= 120 bits, but an IPv6 address has 128"),
        (("10.0.0.1/8", 8, 4, 4, 8), "has host bits set; expected a network address such as 10.0.0.0/8"),
        (("10.0.0.0/33", 8, 4, 4, 8), "is not a CIDR"),
        (("banana", 8, 4, 4, 8), "'banana' is not a CIDR"),
        ((None, 8, 4, 4, 8), "prefix None is not a string"),
        (("10.0.0.0/8", -1, 5, 4, 8), "host_bits -1 is too small"),
        (("10.0.0.0/8", 8, 4, 11, 1), "endpoint_bits 1 is too small; expected >= 2"),
        (("10.0.0.0/8", 8, "4", 4, 8), "tenant_bits '4' is not an integer"),
        (("10.0.0.0/8", 8, 4.0, 4, 8), "tenant_bits 4.0 is not an integer"),
        (("10.0.0.0/8", True, 11, 4, 8), "host_bits True is not an integer"),
    ],
)
def test_bad_layouts_are_clear_errors(args, fragment):
    with pytest.raises(LayoutInvalid) as err:
        Layout.build(*args)
    assert fragment in err.value.message


def test_numbers_are_checked_against_their_width_never_overflowing():
    layout = Layout.build("10.0.0.0/16", 4, 2, 2, 8)
    assert layout.capacity("tenant") == 4
    with pytest.raises(NumberOutOfRange) as err:
        layout.encode(0, 4, 0, 2)
    assert err.value.message == "tenant number 4 does not fit in 2 tenant bits; accepted: 0..3."
    for field, args in (("host", (16, 0, 0, 2)), ("segment", (0, 0, 4, 2)), ("endpoint", (0, 0, 0, 256))):
        with pytest.raises(NumberOutOfRange, match=f"{field} number"):
            layout.encode(*args)
    with pytest.raises(NumberOutOfRange):
        layout.encode(-1, 0, 0, 2)
    with pytest.raises(LayoutInvalid, match="not inside the datacenter prefix"):
        layout.decode("10.1.0.1")
