"""Subnet pools' prefix rules (fabric.ipam.prefixes): pools checked and normalised, subnets
carved lowest first around what is taken, requests checked against the pool."""

from __future__ import annotations

import pytest

from fabric import exception
from fabric.ipam import prefixes


def test_a_pool_is_collapsed_and_its_lengths_default_as_neutrons_do():
    pool = prefixes.validate_pool(["10.0.1.0/24", "10.0.0.0/24"], None, None, None)
    assert pool == prefixes.PoolSpec(4, ["10.0.0.0/23"], 23, 23, 32)
    v6 = prefixes.validate_pool(["fd00::/48"], 64, None, None)
    assert (v6.ip_version, v6.min_prefixlen, v6.max_prefixlen, v6.default_prefixlen) == (6, 48, 128, 64)


@pytest.mark.parametrize("args, named", [
    ((["10.0.0.5/24"], None, None, None), "10.0.0.5/24"),
    ((["bogus"], None, None, None), "bogus"),
    (([], None, None, None), "empty"),
    ((["10.0.0.0/16"], 24, 25, None), "default_prefixlen 24"),
    ((["10.0.0.0/16"], None, 8, None), "min_prefixlen 8"),
    ((["10.0.0.0/16"], None, None, 33), "max_prefixlen 33"),
])
def test_bad_pools_are_named(args, named):
    with pytest.raises(exception.Invalid, match=named):
        prefixes.validate_pool(*args)


def test_carving_takes_the_lowest_free_aligned_block_around_taken_ones():
    pool = prefixes.validate_pool(["10.40.0.0/16", "10.60.0.0/24"], 24, None, None)
    assert prefixes.carve(pool, None, []) == "10.40.0.0/24"
    assert prefixes.carve(pool, None, ["10.40.0.0/26"]) == "10.40.1.0/24"
    assert prefixes.carve(pool, 26, ["10.40.0.0/26", "10.40.0.128/25"]) == "10.40.0.64/26"
    assert prefixes.carve(pool, 23, ["10.40.1.0/24"]) == "10.40.2.0/23"
    # A full first prefix moves on to the next.
    assert prefixes.carve(pool, 24, ["10.40.0.0/16"]) == "10.60.0.0/24"
    with pytest.raises(exception.Conflict, match="no free /24"):
        prefixes.carve(pool, 24, ["10.40.0.0/16", "10.60.0.0/24"])
    with pytest.raises(exception.Invalid, match="prefixlen 8"):
        prefixes.carve(pool, 8, [])
    v6 = prefixes.validate_pool(["fd00::/48"], 64, None, None)
    assert prefixes.carve(v6, None, ["fd00::/64"]) == "fd00:0:0:1::/64"


def test_a_requested_cidr_must_fit_the_pool_and_overlap_nothing():
    pool = prefixes.validate_pool(["10.40.0.0/16"], 24, 20, 28)
    assert prefixes.check_requested(pool, "10.40.7.0/24", ["10.40.0.0/24"]) == "10.40.7.0/24"
    for cidr, error, named in (("10.41.0.0/24", exception.Invalid, "not inside"),
                               ("10.40.0.0/29", exception.Invalid, "prefixlen 29"),
                               ("10.40.0.128/25", exception.Conflict, "overlaps 10.40.0.0/24"),
                               ("fd00::/64", exception.Invalid, "IPv4"),
                               ("10.40.0.1/24", exception.Invalid, "10.40.0.1/24")):
        with pytest.raises(error, match=named):
            prefixes.check_requested(pool, cidr, ["10.40.0.0/24"])
