"""Subnet pools on every backend: lowest free first, idempotent, clear errors, nothing half-written."""

from __future__ import annotations

import threading

import pytest

from fabric.context import RequestContext
from fabric.exception import AddressExhausted, AddressInUse, Invalid, InvalidAddress, NotFound, RequestTokenConflict
from tests.fixtures.databases import SERVER_BACKENDS
from tests.unit.ipam.conftest import make_subnet, snapshot

CTX = RequestContext.admin()


def addresses(results):
    return [r["address"] for r in results]


def test_lowest_free_first_and_released_address_is_free_at_once(ipam, db):
    subnet = make_subnet(db, "10.1.0.0/24")
    got = [ipam.allocate(CTX, f"t{i}", subnet_id=subnet) for i in range(5)]
    # .1 is the gateway; .0 and .255 are never handed out.
    assert addresses(got) == [f"10.1.0.{i}" for i in range(2, 7)]
    assert got[0]["gateway"] == "10.1.0.1" and got[0]["prefixlen"] == 24 and got[0]["pool"] == subnet

    assert addresses(ipam.release(CTX, pool=subnet, request_token="t3")) == ["10.1.0.5"]
    assert addresses(ipam.release(CTX, pool=subnet, request_token="t1")) == ["10.1.0.3"]
    # Lowest free first, immediately, long before the pool is exhausted.
    assert ipam.allocate(CTX, "n1", subnet_id=subnet)["address"] == "10.1.0.3"
    assert ipam.allocate(CTX, "n2", subnet_id=subnet)["address"] == "10.1.0.5"
    assert ipam.allocate(CTX, "n3", subnet_id=subnet)["address"] == "10.1.0.7"
    listed = ipam.list_allocations(CTX, pool=subnet)
    assert addresses(listed) == [f"10.1.0.{i}" for i in range(2, 8)]


def test_allocation_and_release_are_idempotent(ipam, db):
    subnet = make_subnet(db, "10.2.0.0/24")
    first = ipam.allocate(CTX, "req-a", subnet_id=subnet)
    again = ipam.allocate(CTX, "req-a", subnet_id=subnet)
    assert again == first
    assert ipam.lookup(CTX, subnet, request_token="req-a")["address"] == first["address"]
    assert len(ipam.release(CTX, pool=subnet, request_token="req-a")) == 1
    assert ipam.release(CTX, pool=subnet, request_token="req-a") == []
    with pytest.raises(NotFound, match="req-a in pool"):
        ipam.lookup(CTX, subnet, request_token="req-a")


def test_ranges_gateway_and_reserved_are_respected_ipv6(ipam, db):
    subnet = make_subnet(db, "2001:db8:5::/64", gateway_ip="2001:db8:5::1",
                         allocation_pools=[{"start": "2001:db8:5::10", "end": "2001:db8:5::14"},
                                           {"start": "2001:db8:5::20", "end": "2001:db8:5::21"}],
                         reserved=["2001:db8:5::12"])
    got = [ipam.allocate(CTX, f"t{i}", subnet_id=subnet)["address"] for i in range(6)]
    assert got == ["2001:db8:5::10", "2001:db8:5::11", "2001:db8:5::13", "2001:db8:5::14",
                   "2001:db8:5::20", "2001:db8:5::21"]
    before = snapshot(db)
    with pytest.raises(AddressExhausted) as err:
        ipam.allocate(CTX, "one-too-many", subnet_id=subnet)
    assert err.value.fields == {"pool": subnet, "size": 6, "in_use": 6}
    assert f"No free address in pool {subnet} (6 addresses, 6 in use)" in err.value.message
    assert snapshot(db) == before
    # Still exhausted for a retried token that holds nothing; a token that holds one gets it back.
    assert ipam.allocate(CTX, "t2", subnet_id=subnet)["address"] == "2001:db8:5::13"


def test_explicit_addresses(ipam, db):
    subnet = make_subnet(db, "192.168.7.0/29")  # hosts .1-.6, gateway .1: pool .2-.6
    held = ipam.allocate(CTX, "x", subnet_id=subnet, address="192.168.7.3")
    assert held["address"] == "192.168.7.3"
    assert ipam.allocate(CTX, "x", subnet_id=subnet, address="192.168.7.3") == held
    before = snapshot(db)
    with pytest.raises(AddressInUse) as err:
        ipam.allocate(CTX, "y", subnet_id=subnet, address="192.168.7.3")
    assert err.value.fields["holder"] == "x" and err.value.fields["address"] == "192.168.7.3"
    with pytest.raises(RequestTokenConflict, match="already holds 192.168.7.3"):
        ipam.allocate(CTX, "x", subnet_id=subnet, address="192.168.7.4")
    for bad, reason in [("192.168.7.1", "gateway"), ("192.168.7.7", "accepted: 192.168.7.1 to 192.168.7.6"),
                        ("10.0.0.1", "accepted"), ("fe80::1", "IPv4"), ("nope", "not an IP address")]:
        with pytest.raises(InvalidAddress, match=reason):
            ipam.allocate(CTX, "z", subnet_id=subnet, address=bad)
    assert snapshot(db) == before
    # Automatic allocation steps over the explicitly held .3 ...
    assert addresses([ipam.allocate(CTX, f"a{i}", subnet_id=subnet) for i in range(4)]) == [
        "192.168.7.2", "192.168.7.4", "192.168.7.5", "192.168.7.6"]
    # ... and once it is released, .3 is the lowest free address again.
    ipam.release(CTX, pool=subnet, address="192.168.7.3")
    assert ipam.allocate(CTX, "b", subnet_id=subnet)["address"] == "192.168.7.3"


def test_overlapping_cidrs_in_two_tenants_are_separate_pools(ipam, db):
    mine = make_subnet(db, "10.9.0.0/24", project_id="tenant-a")
    theirs = make_subnet(db, "10.9.0.0/24", project_id="tenant-b")
    a = ipam.allocate(CTX, "same-token", subnet_id=mine)
    b = ipam.allocate(CTX, "same-token", subnet_id=theirs)
    assert a["address"] == b["address"] == "10.9.0.2"
    assert a["pool"] != b["pool"]


def test_release_by_port_and_unknown_things(ipam, db):
    from fabric.db.models import Port

    subnet = make_subnet(db, "10.3.0.0/24")
    with db.begin() as session:
        network_id = session.get(__import__("fabric.db.models", fromlist=["Subnet"]).Subnet, subnet).network_id
        session.add(Port(id="port-1", network_id=network_id, project_id="p1", mac_address="fa:16:3e:00:00:01"))
    ipam.allocate(CTX, "p-a", subnet_id=subnet, port_id="port-1")
    ipam.allocate(CTX, "p-b", subnet_id=subnet, port_id="port-1", address="10.3.0.50")
    assert addresses(ipam.list_allocations(CTX, port_id="port-1")) == ["10.3.0.2", "10.3.0.50"]
    before = snapshot(db)
    with pytest.raises(NotFound, match="port no-such-port"):
        ipam.allocate(CTX, "p-c", subnet_id=subnet, port_id="no-such-port")
    with pytest.raises(NotFound, match="subnet"):
        ipam.allocate(CTX, "p-c", subnet_id="no-such-subnet")
    with pytest.raises(Invalid, match="request_token"):
        ipam.allocate(CTX, "", subnet_id=subnet)
    assert snapshot(db) == before
    assert sorted(addresses(ipam.release(CTX, port_id="port-1"))) == ["10.3.0.2", "10.3.0.50"]
    assert ipam.release(CTX, port_id="port-1") == []
    assert ipam.allocate(CTX, "again", subnet_id=subnet)["address"] == "10.3.0.2"


@pytest.mark.parametrize("cidr,kwargs,fragment", [
    ("10.0.0.1/24", {}, "has host bits set; did you mean 10.0.0.0/24?"),
    ("10.0.0.0/31", {}, "too small; accepted: prefix length up to /30"),
    ("10.0.0.0/24", {"gateway_ip": "10.0.1.1"}, "gateway_ip 10.0.1.1 is not inside the subnet 10.0.0.0/24"),
    ("10.0.0.0/24", {"allocation_pools": [{"start": "10.0.0.20", "end": "10.0.0.10"}]}, "ends before it starts"),
    ("10.0.0.0/24", {"allocation_pools": [["10.0.0.2", "10.0.0.9"], ["10.0.0.5", "10.0.0.20"]]}, "overlap"),
    ("10.0.0.0/24", {"allocation_pools": [["10.0.0.0", "10.0.0.9"]]}, "network or broadcast"),
    ("10.0.0.0/30", {"reserved": ["10.0.0.2"]}, "no allocatable address left"),
    ("2001:db8::/64", {"ip_version": 4}, "does not match"),
])
def test_bad_subnets_are_refused_before_anything_is_stored(cidr, kwargs, fragment):
    from fabric.ipam.pools import validate_subnet

    with pytest.raises(Invalid) as err:
        validate_subnet(cidr, **kwargs)
    assert fragment in err.value.message


# SQLite serialises writers; the server backends are the concurrent case.
@pytest.mark.parametrize("db", SERVER_BACKENDS, indirect=True)
def test_concurrent_allocations_never_share_an_address(ipam, db):
    subnet = make_subnet(db, "10.20.0.0/22")
    ipam.allocate(CTX, "warm", subnet_id=subnet)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(30):
                got = ipam.allocate(CTX, f"w{n}-{i}", subnet_id=subnet)["address"]
                results.append(got)
                if i % 3 == 0:
                    ipam.release(CTX, pool=subnet, request_token=f"w{n}-{i}")
                    results.remove(got)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    held = addresses(ipam.list_allocations(CTX, pool=subnet))
    assert len(held) == len(set(held)) == 1 + 8 * 20
    assert sorted(held) == sorted(results + ["10.20.0.2"])


def test_explicit_addresses_ahead_of_and_behind_the_mark_are_skipped(ipam, db):
    subnet = make_subnet(db, "10.4.0.0/24")  # pool .2-.254
    ipam.allocate(CTX, "early", subnet_id=subnet)  # .2; the mark now covers a chunk of ordinals
    ipam.allocate(CTX, "x5", subnet_id=subnet, address="10.4.0.5")  # inside the chunk (a free row)
    ipam.allocate(CTX, "x60", subnet_id=subnet, address="10.4.0.60")  # beyond the mark
    got = addresses([ipam.allocate(CTX, f"a{i}", subnet_id=subnet) for i in range(60)])
    assert "10.4.0.5" not in got and "10.4.0.60" not in got
    assert got == [f"10.4.0.{i}" for i in range(3, 65) if i not in (5, 60)]
    held = addresses(ipam.list_allocations(CTX, pool=subnet))
    assert len(held) == len(set(held)) == 63
    ipam.release(CTX, pool=subnet, request_token="x60")
    ipam.release(CTX, pool=subnet, request_token="a0")
    assert ipam.allocate(CTX, "b0", subnet_id=subnet)["address"] == "10.4.0.3"
    assert ipam.allocate(CTX, "b1", subnet_id=subnet)["address"] == "10.4.0.60"


def test_subnet_created_prepares_the_pool_and_a_deleted_subnet_takes_its_pool_along(ipam, db):
    from fabric.db.models import AddressPool, Subnet

    subnet = make_subnet(db, "2001:db8:9::/64", gateway_ip="2001:db8:9::1")
    info = ipam.subnet_created(CTX, subnet)
    assert info == {"kind": "subnet", "subnet_id": subnet, "cidr": "2001:db8:9::/64", "prefixlen": 64,
                    "gateway": "2001:db8:9::1", "ip_version": 6, "pool": subnet, "size": 2**64 - 2}
    assert ipam.subnet_created(CTX, subnet) == info  # a redelivered cast changes nothing
    assert ipam.allocate(CTX, "v6", subnet_id=subnet)["address"] == "2001:db8:9::2"
    with db.begin() as session:
        session.delete(session.get(Subnet, subnet))
    with db.begin() as session:
        assert session.get(AddressPool, subnet) is None
    with pytest.raises(NotFound):
        ipam.allocate(CTX, "after", subnet_id=subnet)
    with pytest.raises(NotFound, match=f"subnet {subnet}"):
        ipam.allocate(CTX, "after", subnet_id=subnet)


# SQLite has no server connections to lose.
@pytest.mark.parametrize("db", SERVER_BACKENDS, indirect=True)
def test_allocations_survive_the_server_closing_connections(ipam, db):
    import sqlalchemy as sa

    subnet = make_subnet(db, "10.8.0.0/24")
    assert ipam.allocate(CTX, "before", subnet_id=subnet)["address"] == "10.8.0.2"
    with db.engine.connect() as conn:
        if db.backend == "postgresql":
            killed = conn.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        else:
            ids = conn.execute(sa.text(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()")).scalars().all()
            for ident in ids:
                conn.execute(sa.text(f"KILL CONNECTION {int(ident)}"))
            killed = len(ids)
    assert killed >= 1
    assert ipam.allocate(CTX, "after", subnet_id=subnet)["address"] == "10.8.0.3"
    assert addresses(ipam.release(CTX, pool=subnet, request_token="before")) == ["10.8.0.2"]
    assert ipam.allocate(CTX, "again", subnet_id=subnet)["address"] == "10.8.0.2"


def test_default_ranges_leave_out_the_gateway_and_build_the_same_pool():
    from fabric.ipam.pools import subnet_pool, validate_subnet

    spec = validate_subnet("10.0.0.0/24")
    assert (spec.gateway_ip, spec.allocation_pools) == ("10.0.0.1", [{"start": "10.0.0.2", "end": "10.0.0.254"}])
    middle = validate_subnet("10.0.0.0/29", gateway_ip="10.0.0.3")
    assert middle.allocation_pools == [{"start": "10.0.0.1", "end": "10.0.0.2"},
                                       {"start": "10.0.0.4", "end": "10.0.0.6"}]
    assert validate_subnet("10.0.0.0/30", gateway_ip=None).allocation_pools == [
        {"start": "10.0.0.1", "end": "10.0.0.2"}]
    # A row stored with ranges that hold the gateway (or with none) builds the very
    # same pool: the gateway was never handed out, and the ordinals do not move.
    stored_before = subnet_pool("s1", "10.0.0.0/24", "10.0.0.1", [{"start": "10.0.0.1", "end": "10.0.0.254"}], [])
    assert subnet_pool("s1", "10.0.0.0/24", "10.0.0.1", spec.allocation_pools, []) == stored_before
    assert subnet_pool("s1", "10.0.0.0/24", "10.0.0.1", [], []) == stored_before
    assert stored_before.address(0) == "10.0.0.2"


# SQLite has no server connections to lose.
@pytest.mark.parametrize("db", SERVER_BACKENDS, indirect=True)
def test_allocations_survive_a_restart_that_closed_every_pooled_connection(ipam, db):
    import sqlalchemy as sa

    subnet = make_subnet(db, "10.9.0.0/24")
    assert ipam.allocate(CTX, "before", subnet_id=subnet)["address"] == "10.9.0.2"
    # Several idle connections in the allocator's own pool, as a busy worker has.
    held = [ipam.allocator._hot.raw_connection() for _ in range(3)]
    for connection in held:
        connection.close()
    with db.engine.connect() as conn:
        if db.backend == "postgresql":
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        else:
            for ident in conn.execute(sa.text("SELECT id FROM information_schema.processlist "
                                              "WHERE db = DATABASE() AND id <> CONNECTION_ID()")).scalars():
                conn.execute(sa.text(f"KILL CONNECTION {int(ident)}"))
    # One call: the first dead connection fails its statement, and none of the others is reused.
    assert ipam.allocate(CTX, "after", subnet_id=subnet)["address"] == "10.9.0.3"
    assert addresses(ipam.release(CTX, pool=subnet, request_token="before")) == ["10.9.0.2"]


# prepared statements are the PostgreSQL path.
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_single_requests_reuse_the_plan_postgresql_keeps(ipam, db):
    import sqlalchemy as sa

    subnet = make_subnet(db, "10.10.0.0/24")
    for i in range(12):  # one at a time: each a batch of one
        ipam.allocate(CTX, f"t{i}", subnet_id=subnet)
        ipam.release(CTX, pool=subnet, request_token=f"t{i}")
    connection = ipam.allocator._hot.raw_connection()  # the one connection a lone caller used
    try:
        plans = connection.driver_connection.execute(
            "SELECT statement, generic_plans FROM pg_prepared_statements").fetchall()
    finally:
        connection.close()
    reused = {("INSERT INTO address_allocations" in text, "DELETE FROM address_allocations" in text): generic
              for text, generic in plans}
    # Both the allocation and the release by token: planned once, then the kept plan ran.
    assert reused[(True, False)] >= 6 and reused[(False, True)] >= 6, plans
    assert ipam.allocate(CTX, "last", subnet_id=subnet)["address"] == "10.10.0.2"
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM address_allocations")).scalar() == 1
