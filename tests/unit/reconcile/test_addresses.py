"""Address drift on each database: allocations without ports, ports without allocations."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from fabric import config
from fabric.compute.collaborators import dhcp_request_token, request_token
from fabric.context import RequestContext
from fabric.db.models import AddressAllocation, FloatingIp, Port, Subnet
from fabric.ipam.manager import IpamManager
from fabric.network.model import floating_request_token
from tests.fixtures.instances import add_instance
from tests.fixtures.subnets import make_subnet


@pytest.fixture
def ipam(db):
    manager = IpamManager(config.Settings(), host="test-ipam", db=db)
    yield manager
    manager.cleanup_host()


@pytest.fixture
def server(ipam):
    """An active server with one NIC holding 10.40.0.9 (as a build leaves it) and its host's DHCP port."""
    ctx, db = RequestContext.admin(), ipam.db
    subnet = make_subnet(db, "10.40.0.0/24")
    with db.begin() as session:
        network = session.get(Subnet, subnet).network_id
    instance_id = str(uuid.uuid4())
    nic, dhcp = str(uuid.uuid4()), str(uuid.uuid4())
    with db.begin() as session:
        session.add_all([Port(id=nic, network_id=network, project_id="p1", mac_address="02:00:00:00:01:01",
                              device_id=instance_id, device_owner="compute:nova", host="cmp1"),
                         Port(id=dhcp, network_id=network, project_id="p1", mac_address="02:00:00:00:01:02",
                              device_owner="network:dhcp", host="cmp1")])
    ipam.allocate(ctx, dhcp_request_token(network, "cmp1"), subnet_id=subnet, port_id=dhcp)
    held = ipam.allocate(ctx, request_token(instance_id, 0), subnet_id=subnet, address="10.40.0.9", port_id=nic)
    add_instance(db, id=instance_id, host="cmp1", vm_state="active", task_state=None,
                 network_info=[{"id": nic, "index": 0, "network_id": network, "subnet_id": subnet,
                                "segment_id": None, "address": "10.40.0.9", "pool": held["pool"]}])
    return {"subnet": subnet, "network": network, "instance": instance_id, "nic": nic, "dhcp": dhcp,
            "pool": held["pool"]}


def _kinds(report: dict) -> list[tuple[str, str, str]]:
    return sorted((f["kind"], f["what"], f["ident"]) for f in report["findings"])


def _allocations(db, port_id: str) -> list[tuple[str, str]]:
    with db.begin() as session:
        return [(r.address, r.request_token) for r in session.scalars(
            sa.select(AddressAllocation).where(AddressAllocation.port_id == port_id))]


def test_ports_holding_their_addresses_report_nothing(ipam, server):
    assert ipam.reconcile_addresses(RequestContext.admin()) == {"host": None, "findings": []}


def test_an_allocation_without_a_port_is_an_orphan_released_through_ipam(ipam, server):
    ctx = RequestContext.admin()
    lost = ipam.allocate(ctx, "leaked-token", subnet_id=server["subnet"])
    ident = f"{server['pool']}/{lost['address']}"
    assert _kinds(ipam.reconcile_addresses(ctx)) == [("orphan", "allocation", ident)]
    assert _kinds(ipam.reconcile_addresses(ctx, {"stale": True})) == [("orphan", "allocation", ident)]

    fixed = ipam.reconcile_addresses(ctx, {"orphans": True})
    assert [f["fixed"] for f in fixed["findings"]] == [True]
    assert ipam.reconcile_addresses(ctx)["findings"] == []
    # Free again: the pool hands the same address out to the next request.
    assert ipam.allocate(ctx, "next-token", subnet_id=server["subnet"])["address"] == lost["address"]
    ipam.release(ctx, pool=server["pool"], request_token="next-token")


def test_a_nic_port_whose_allocation_row_was_deleted_is_stale_and_gets_its_address_back(ipam, server):
    ctx = RequestContext.admin()
    with ipam.db.begin() as session:
        session.execute(sa.delete(AddressAllocation).where(AddressAllocation.port_id == server["nic"]))
    [finding] = ipam.reconcile_addresses(ctx)["findings"]
    assert (finding["kind"], finding["what"], finding["ident"]) == ("stale", "port", server["nic"])
    assert "10.40.0.9" in finding["detail"]

    ipam.reconcile_addresses(ctx, {"orphans": True, "unsynced": True})
    assert _allocations(ipam.db, server["nic"]) == []  # not the kind that was named

    ipam.reconcile_addresses(ctx, {"stale": True})
    # The build's own token: the server's delete releases it as usual.
    assert _allocations(ipam.db, server["nic"]) == [("10.40.0.9", request_token(server["instance"], 0))]
    assert ipam.reconcile_addresses(ctx)["findings"] == []


def test_a_dhcp_port_without_an_address_is_stale_and_allocated_with_the_dhcp_token(ipam, server):
    ctx = RequestContext.admin()
    ipam.release(ctx, port_id=server["dhcp"])
    assert _kinds(ipam.reconcile_addresses(ctx)) == [("stale", "port", server["dhcp"])]
    ipam.reconcile_addresses(ctx, {"stale": True})
    [(address, token)] = _allocations(ipam.db, server["dhcp"])
    assert token == dhcp_request_token(server["network"], "cmp1")
    assert ipam.reconcile_addresses(ctx)["findings"] == []


def test_a_nic_holding_another_address_than_recorded_is_reported_unsynced_and_left(ipam, server):
    ctx = RequestContext.admin()
    ipam.release(ctx, port_id=server["nic"])
    ipam.allocate(ctx, request_token(server["instance"], 0), subnet_id=server["subnet"], address="10.40.0.20",
                  port_id=server["nic"])
    report = ipam.reconcile_addresses(ctx, {"unsynced": True})
    [finding] = report["findings"]
    assert (finding["kind"], finding["fixed"]) == ("unsynced", False)
    assert "reported only" in finding["error"]
    assert _allocations(ipam.db, server["nic"]) == [("10.40.0.20", request_token(server["instance"], 0))]


def test_a_server_at_work_is_no_finding(ipam, server):
    with ipam.db.begin() as session:
        session.execute(sa.delete(AddressAllocation).where(AddressAllocation.port_id == server["nic"]))
    from fabric.compute import states

    states.compare_and_swap(ipam.db, server["instance"], {"task_state": None}, task_state=states.DELETING)
    assert ipam.reconcile_addresses(RequestContext.admin())["findings"] == []


def test_an_allocation_whose_port_row_was_deleted_is_an_orphan(ipam, server):
    ctx = RequestContext.admin()
    with ipam.db.begin() as session:  # behind fabric's back (the foreign key empties port_id, or not)
        session.execute(sa.delete(Port).where(Port.id == server["nic"]))
    [finding] = ipam.reconcile_addresses(ctx)["findings"]
    assert (finding["kind"], finding["what"], finding["ident"]) == ("orphan", "allocation",
                                                                    f"{server['pool']}/10.40.0.9")
    ipam.reconcile_addresses(ctx, {"orphans": True})
    assert ipam.reconcile_addresses(ctx)["findings"] == []


def test_a_floating_ips_address_is_no_orphan_until_its_floating_ip_is_gone(ipam, server):
    # A floating IP's address has no port: its floating_ips row is what holds it.
    ctx = RequestContext.admin()
    floating_id = str(uuid.uuid4())
    held = ipam.allocate(ctx, floating_request_token(floating_id), subnet_id=server["subnet"])
    with ipam.db.begin() as session:
        session.add(FloatingIp(id=floating_id, address=held["address"], project_id="p1",
                               floating_network_id=server["network"]))
    assert ipam.reconcile_addresses(ctx, {"orphans": True})["findings"] == []
    assert _allocations_by_token(ipam.db, floating_request_token(floating_id)) == [held["address"]]
    with ipam.db.begin() as session:
        session.execute(sa.delete(FloatingIp).where(FloatingIp.id == floating_id))
    assert _kinds(ipam.reconcile_addresses(ctx)) == [("orphan", "allocation", f"{server['pool']}/{held['address']}")]


def _allocations_by_token(db, token: str) -> list[str]:
    with db.begin() as session:
        return list(session.scalars(sa.select(AddressAllocation.address).where(AddressAllocation.request_token == token)))
