"""The ipam rpcapi against a real RPCServer on memory://: results and errors cross as themselves."""

from __future__ import annotations

import secrets

import pytest

from fabric import config, rpc
from fabric.context import RequestContext
from fabric.exception import AddressExhausted, InvalidAddress, LayoutInvalid, NumberExhausted
from fabric.ipam.manager import IpamManager
from fabric.ipam.rpcapi import IpamAPI
from tests.fixtures.rpc import wait_for
from tests.unit.ipam.conftest import make_subnet

CTX = RequestContext(user_id="u1", project_id="p1")


@pytest.fixture
def ipam_rpc(sqlite_db):
    settings = config.load(None, environ={}).replace(
        rpc={"transport_url": f"memory://ipam-{secrets.token_hex(4)}", "call_timeout": 10.0})
    transport = rpc.get_transport(settings.rpc)
    manager = IpamManager(settings, host="ipam-test", db=sqlite_db)
    server = rpc.RPCServer(transport, topic="ipam", host="ipam-test", endpoint=manager)
    server.start()
    api = IpamAPI(transport)
    api.manager = manager  # for tests that look at the worker's side
    yield api
    server.stop()
    server.wait(5)
    manager.cleanup_host()
    transport.cleanup()


def test_allocate_release_lookup_list_over_rpc(ipam_rpc, sqlite_db):
    subnet = make_subnet(sqlite_db, "10.5.0.0/30")  # one address: .2
    got = ipam_rpc.allocate(CTX, "r1", subnet_id=subnet)
    assert got["address"] == "10.5.0.2" and got["gateway"] == "10.5.0.1"
    assert ipam_rpc.allocate(CTX, "r1", subnet_id=subnet) == got
    assert ipam_rpc.lookup(CTX, subnet, request_token="r1")["address"] == "10.5.0.2"
    with pytest.raises(AddressExhausted) as err:
        ipam_rpc.allocate(CTX, "r2", subnet_id=subnet)
    assert err.value.fields == {"pool": subnet, "size": 1, "in_use": 1}
    with pytest.raises(InvalidAddress, match="10.5.0.9"):
        ipam_rpc.allocate(CTX, "r3", subnet_id=subnet, address="10.5.0.9")
    assert [a["address"] for a in ipam_rpc.list_allocations(CTX, pool=subnet)] == ["10.5.0.2"]
    assert [a["address"] for a in ipam_rpc.release(CTX, pool=subnet, request_token="r1")] == ["10.5.0.2"]
    assert ipam_rpc.allocate(CTX, "r2", subnet_id=subnet)["address"] == "10.5.0.2"


def test_topology_over_rpc(ipam_rpc):
    with pytest.raises(LayoutInvalid, match="= 31 bits"):
        ipam_rpc.configure_datacenter(CTX, "10.0.0.0/8", 8, 8, 4, 3)
    layout = ipam_rpc.configure_datacenter(CTX, "10.0.0.0/8", 8, 1, 7, 8)
    assert layout["tenants"] == 2
    host = ipam_rpc.add_host(CTX, "h1", tunnel_address="192.0.2.1")
    assert host["block"] == "10.0.0.0/16"
    ipam_rpc.add_tenant(CTX, "a")
    ipam_rpc.add_tenant(CTX, "b")
    with pytest.raises(NumberExhausted, match="1 tenant bits allow 2"):
        ipam_rpc.add_tenant(CTX, "c")
    seg = ipam_rpc.add_segment(CTX, "b", "web")
    got = ipam_rpc.allocate(CTX, "ep", segment_id=seg["id"], host="h1")
    assert got["address"] == "10.0.128.2" and got["gateway"] == "10.0.128.0"
    assert ipam_rpc.describe_datacenter(CTX)["hosts"][0]["name"] == "h1"


def test_subnet_updated_reaches_the_worker_by_fanout_and_drops_its_cached_pool(ipam_rpc, sqlite_db):
    subnet = make_subnet(sqlite_db, "10.6.0.0/29")
    assert ipam_rpc.allocate(CTX, "r1", subnet_id=subnet)["gateway"] == "10.6.0.1"
    allocator = ipam_rpc.manager.allocator
    assert allocator.definition(subnet, missing_ok=True) is not None and subnet in allocator._definitions
    ipam_rpc.subnet_updated(CTX, subnet)
    # The hub runs the fanout's handler while this yields (the memory transport is green).
    wait_for(lambda: subnet not in allocator._definitions, what="the ipam worker forgetting the pool")
