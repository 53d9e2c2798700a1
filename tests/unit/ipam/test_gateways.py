"""A subnet's gateway moves (``subnet set --gateway``): the pool keeps its ranges (so its
ordinals), the new gateway is kept out of allocation and the old one may be asked for, every
worker's cached definition is dropped when told, and a refusal writes nothing."""

from __future__ import annotations

import pytest

from fabric.context import RequestContext
from fabric.db.models import AddressPool, Subnet
from fabric.exception import Conflict, Invalid, InvalidAddress
from fabric.ipam.gateways import move_subnet_gateway
from fabric.ipam.pools import move_gateway, subnet_pool, validate_subnet
from tests.unit.ipam.conftest import make_subnet, snapshot

CTX = RequestContext.admin()
POOLS = [{"start": "10.9.0.10", "end": "10.9.0.20"}]


def move(db, subnet_id, gateway):
    with db.begin() as session:
        return move_subnet_gateway(session, session.get(Subnet, subnet_id), gateway)


def stored_definition(db, subnet_id) -> dict:
    with db.begin() as session:
        return session.get(AddressPool, subnet_id).definition


def test_the_ranges_stay_and_only_the_excluded_gateway_moves():
    moved = move_gateway("10.9.0.0/24", "10.9.0.1", POOLS, [], "10.9.0.5")
    assert (moved.gateway_ip, moved.allocation_pools) == ("10.9.0.5", POOLS)
    before = subnet_pool("s", "10.9.0.0/24", "10.9.0.1", POOLS, [])
    after = subnet_pool("s", moved.cidr, moved.gateway_ip, moved.allocation_pools, moved.reserved)
    assert after.ranges == before.ranges
    assert (before.to_json()["excluded"], after.to_json()["excluded"]) == (["10.9.0.1"], ["10.9.0.5"])
    assert after.info["gateway"] == "10.9.0.5"
    # The old gateway may now be asked for by name; the new one may not.
    assert after.check_explicit("10.9.0.1") == ("10.9.0.1", None)
    with pytest.raises(InvalidAddress, match="gateway"):
        after.check_explicit("10.9.0.5")
    # None: no gateway at all.
    assert move_gateway("10.9.0.0/24", "10.9.0.1", POOLS, [], None).gateway_ip is None


def test_a_row_from_before_the_gateway_rule_has_its_old_gateway_cut_out_of_its_pools():
    # Its pools cover the gateway (the pool never handed it out): cut out, the ranges are the same.
    legacy = [{"start": "10.9.0.1", "end": "10.9.0.254"}]
    before = subnet_pool("s", "10.9.0.0/24", "10.9.0.1", legacy, [])
    with pytest.raises(Conflict, match=r"Gateway ip 10\.9\.0\.9 conflicts with allocation pool 10\.9\.0\.2-10\.9\.0\.254"):
        move_gateway("10.9.0.0/24", "10.9.0.1", legacy, [], "10.9.0.9")
    moved = move_gateway("10.9.0.0/24", "10.9.0.1", legacy, [], None)
    assert moved.allocation_pools == [{"start": "10.9.0.2", "end": "10.9.0.254"}]
    assert subnet_pool("s", moved.cidr, None, moved.allocation_pools, []).ranges == before.ranges


@pytest.mark.parametrize("gateway, error, named", [
    ("10.9.0.15", Conflict, "Gateway ip 10.9.0.15 conflicts with allocation pool 10.9.0.10-10.9.0.20"),
    ("10.9.1.1", Invalid, "gateway_ip 10.9.1.1 is not inside the subnet 10.9.0.0/24"),
    ("10.9.0.255", Invalid, "gateway_ip 10.9.0.255 is the network or broadcast address"),
    ("10.9.0.0", Invalid, "gateway_ip 10.9.0.0 is the network or broadcast address"),
    ("auto", Invalid, "gateway_ip 'auto' is not an IP address"),
    ("nonsense", Invalid, "'nonsense' is not an IP address"),
    (7, Invalid, "gateway_ip 7 is not an IP address"),
    ("2001:db8::1", Invalid, "gateway_ip 2001:db8::1 is not inside the subnet"),
])
def test_a_bad_gateway_is_refused_naming_it(gateway, error, named):
    with pytest.raises(error) as err:
        move_gateway("10.9.0.0/24", "10.9.0.1", POOLS, [], gateway)
    assert named in err.value.message


def test_the_stored_pool_moves_with_the_subnet_and_workers_forget_their_copy(ipam, db):
    subnet = make_subnet(db, "10.9.0.0/24", allocation_pools=POOLS)
    first = ipam.allocate(CTX, "t1", subnet_id=subnet)
    assert (first["address"], first["gateway"]) == ("10.9.0.10", "10.9.0.1")
    assert move(db, subnet, "10.9.0.5") is True
    assert move(db, subnet, "10.9.0.5") is False  # already there: nothing to do
    stored = stored_definition(db, subnet)
    assert (stored["excluded"], stored["info"]["gateway"]) == (["10.9.0.5"], "10.9.0.5")
    # Before this worker heard of it: a request by name reads the stored definition.
    with pytest.raises(InvalidAddress, match="gateway"):
        ipam.allocate(CTX, "by-name", subnet_id=subnet, address="10.9.0.5")
    ipam.subnet_updated(CTX, subnet_id=subnet)
    second = ipam.allocate(CTX, "t2", subnet_id=subnet)
    assert (second["address"], second["gateway"]) == ("10.9.0.11", "10.9.0.5")  # ordinals unmoved
    assert ipam.allocate(CTX, "old-gw", subnet_id=subnet, address="10.9.0.1")["address"] == "10.9.0.1"
    # Removing the gateway leaves nothing excluded; the row and the pool agree.
    assert move(db, subnet, None) is True
    ipam.subnet_updated(CTX, subnet_id=subnet)
    assert stored_definition(db, subnet)["excluded"] == []
    assert ipam.allocate(CTX, "t3", subnet_id=subnet)["gateway"] is None
    assert ipam.allocate(CTX, "x5", subnet_id=subnet, address="10.9.0.5")["address"] == "10.9.0.5"
    with db.begin() as session:
        assert session.get(Subnet, subnet).gateway_ip is None


def test_a_gateway_held_by_an_allocation_is_refused_with_nothing_written(ipam, db):
    subnet = make_subnet(db, "10.9.0.0/24", allocation_pools=POOLS)
    ipam.allocate(CTX, "outside", subnet_id=subnet, address="10.9.0.30")
    before = snapshot(db)
    with pytest.raises(Conflict, match=r"The IP address 10\.9\.0\.30 is in use \(by allocation outside\)"):
        move(db, subnet, "10.9.0.30")
    assert snapshot(db) == before


def test_a_subnet_whose_pool_is_not_made_yet_gets_it_with_the_new_gateway(ipam, db):
    subnet = make_subnet(db, "10.9.0.0/24", allocation_pools=POOLS)
    assert move(db, subnet, "10.9.0.7") is True
    assert stored_definition(db, subnet)["excluded"] == ["10.9.0.7"]
    info = ipam.subnet_created(CTX, subnet)  # the cast that arrives late finds the pool as it is
    assert (info["gateway"], info["size"]) == ("10.9.0.7", 11)
    assert validate_subnet("10.9.0.0/24", "10.9.0.7", POOLS).allocation_pools == POOLS
