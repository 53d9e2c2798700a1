"""What one NIC of a build costs its host's database: the compute worker's allocation
(:meth:`~fabric.compute.collaborators.IpamAddresses.allocate`) and plug
(:meth:`~fabric.compute.collaborators.RpcNetworkPlugger.plug`), with the host's network
worker's plug (:meth:`fabric.network.manager.NetworkManager.plug`) behind it; IPAM, another
process, has an engine of its own here, so its statements are not counted.

Each read of a build is made once and passed along (``subnets=``, ``held=``, the port's
membership from what the plug holds): a boot storm (tools/bench/storm.py) read the network's
subnets 4.33 times per server, and its statements per server were 35.7. What is sent must
still be what full reads give: the network's spec and the endpoint as the host's reconciliation
reads them, and the port's remote-group membership as :func:`~fabric.network.dbstate.port_membership`
reads it.
"""

from __future__ import annotations

import collections
import re

import pytest
import sqlalchemy as sa

from fabric import rpc
from fabric.compute.collaborators import IpamAddresses, RpcNetworkPlugger
from fabric.context import RequestContext
from fabric.db import Database
from fabric.db.models import Network, Subnet
from fabric.ipam.manager import IpamManager
from fabric.network import dbstate, secgroups_db
from fabric.network.drivers.fake import FakeDriver
from fabric.network.manager import Announcements, NetworkManager
from tests.fixtures import instances
from tests.fixtures.rpc import serving
from tests.fixtures.sql_log import SqlLog
from tests.unit.rpc.conftest import settings  # noqa: F401 - fixture

HOST = "h1"
NETWORK = "0c6f7a52-0000-4000-8000-000000000064"

#: The statements of a NIC on a network its host serves already (its DHCP port holds an address),
#: by kind. The binding's transaction: the network, its subnets, the port (a redelivered build's),
#: the port and its groups written, the groups named checked. Then: the host's DHCP port and
#: whether it holds an address (served already); the plug: the port with its network and
#: addresses, the network's subnets, the host's DHCP port with its address; the network worker:
#: the host's ports and their groups, those groups' rules, the routers on its networks. Last,
#: the port reads ACTIVE. Nothing else: the membership the worker applies and announces is the
#: plug's (the port's groups among its host's, its addresses in the endpoint), and a rule just
#: read names the port's group as remote (so nobody asks again).
LATER_NIC = {
    "SELECT networks": 1,
    "SELECT subnets": 2,
    "SELECT ports": 1,
    "INSERT ports": 1,
    "SELECT security_groups": 1,
    "INSERT port_security_groups": 1,
    "SELECT ports address_allocations": 2,
    "SELECT ports networks address_allocations": 1,
    "SELECT ports port_security_groups": 1,
    "SELECT security_group_rules": 1,
    "SELECT router_interfaces subnets": 1,
    "UPDATE ports": 1,
}
#: The host's first NIC on the network: its DHCP port is made too (the network's project known
#: from the binding's read), and the network worker reads the members of the remote group it
#: does not hold yet (with their networks' SLAAC subnets).
FIRST_NIC = collections.Counter(LATER_NIC) + collections.Counter({
    "INSERT ports": 1,
    "SELECT port_security_groups ports address_allocations": 1,
    "SELECT subnets": 1,
})


def kind(statement: str) -> str:
    """``SELECT <tables of its FROM clause>``, ``INSERT <table>``, ``UPDATE <table>``."""
    words = statement.split()
    if words[0] == "SELECT":
        clause = re.split(r"\b(?:WHERE|ORDER BY|LIMIT|GROUP BY)\b", " ".join(words))[0]
        return "SELECT " + " ".join(re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", clause))
    return f"{words[0]} {words[2] if words[0] in ('INSERT', 'DELETE') else words[1]}"


def counted(log: SqlLog) -> dict[str, int]:
    """The statements ``log`` saw, by :func:`kind`."""
    return dict(collections.Counter(map(kind, log.sent)))


@pytest.fixture
def host(db, settings, monkeypatch):  # noqa: F811 - the fixture imported above
    """(nic, worker, announced): ``nic()`` allocates and plugs the next NIC of a new server on
    HOST (dual-stack network: an IPv4 subnet serving DHCP, a SLAAC one; the project's default
    group, whose rule names itself as remote) and returns (vif, plugged); ``worker``: HOST's
    network worker (fake driver); ``announced``: the memberships it announced."""
    with db.begin() as session:
        session.add(Network(id=NETWORK, project_id=instances.PROJECT, network_type="vxlan", segmentation_id=640))
        session.flush()
        session.add_all([
            Subnet(network_id=NETWORK, project_id=instances.PROJECT, ip_version=4, cidr="10.64.0.0/24",
                   gateway_ip="10.64.0.1", enable_dhcp=True),
            Subnet(network_id=NETWORK, project_id=instances.PROJECT, ip_version=6, cidr="fd00:64::/64",
                   ipv6_address_mode="slaac", ipv6_ra_mode="slaac"),
        ])
    group = secgroups_db.ensure_default_group(db, instances.PROJECT)
    own = settings.replace(default={"host": HOST})
    transport = rpc.get_transport(settings.rpc)
    ipam_db = Database(db.url.render_as_string(hide_password=False))  # IPAM's process: not counted
    ipam = IpamManager(settings, host="ipam", db=ipam_db, transport=transport)
    worker = NetworkManager(own, host=HOST, db=db, transport=transport, driver=FakeDriver(own))
    addresses, plugger = IpamAddresses(transport, db), RpcNetworkPlugger(transport, db, own)
    announced: list[tuple[str, list[str], list[str]]] = []
    monkeypatch.setattr(Announcements, "add", lambda self, ctx, port_id, groups, addresses:
                        announced.append((port_id, groups, addresses)))
    ctx = RequestContext.admin()

    def nic() -> tuple[dict, dict]:
        server = instances.instance_row(host=HOST, requested_networks=[
            {"network_id": NETWORK, "port_id": None, "fixed_ip": None, "security_groups": [group]}])
        vif = addresses.allocate(ctx, server, 0, server["requested_networks"][0])
        return vif, plugger.plug(ctx, HOST, vif)

    try:
        with serving(transport, ipam, host="ipam", topic="ipam"), serving(transport, worker, host=HOST,
                                                                          topic="network"):
            yield nic, worker, announced
    finally:
        ipam.cleanup_host()
        ipam_db.dispose()
        transport.cleanup()


def test_a_nic_is_allocated_and_plugged_reading_each_row_once(db, host):
    nic, worker, announced = host
    with SqlLog(db) as first:
        nic()
    with SqlLog(db) as later:
        vif, plugged = nic()
    assert counted(first) == dict(FIRST_NIC), first.sent
    assert counted(later) == LATER_NIC, later.sent
    if db.backend == "postgresql":  # reads in autocommit, the port's status alone: the binding's only
        assert (first.transactions, later.transactions) == (2, 1)

    # What was plugged is what full reads give: the host's reconciliation, the port's membership.
    state = dbstate.host_state(db, HOST, worker.settings)
    assert worker.driver.state.networks[NETWORK] == state.networks[NETWORK]
    assert worker.driver.state.endpoints[vif["id"]] == state.endpoints[vif["id"]]
    assert state.endpoints[vif["id"]].address6  # the SLAAC address, derived from its subnet
    with db.read() as session:
        groups, addresses = dbstate.port_membership(session, vif["id"])
    assert announced[-1] == (vif["id"], groups, list(addresses))
    assert len(addresses) == 3  # IPv4, link-local, SLAAC
    full = dbstate.security_state(db, HOST)
    assert worker.driver.security.to_dict() == full.to_dict()
    assert worker.driver.security.member_ports == full.member_ports
    assert plugged["tap"]


def test_a_plug_of_a_port_its_host_does_not_hold_reads_the_membership(db, host):
    """The membership comes from the database when the host's state cannot tell it (a port bound
    to another host, plugged here by a message older than its move): as before."""
    nic, worker, announced = host
    nic()  # a server that stays: the host holds the default group, whose rule names itself as remote
    vif, _ = nic()
    with db.begin() as session:
        session.execute(sa.text("UPDATE ports SET host = 'h2' WHERE id = :id"), {"id": vif["id"]})
    endpoint = worker.driver.state.endpoints[vif["id"]].to_dict()
    before = dict(worker.driver.security.member_ports)
    with SqlLog(db) as plug:
        worker.plug(RequestContext.admin(), endpoint)
    assert "SELECT port_security_groups ports address_allocations" in counted(plug), plug.sent
    with db.read() as session:
        groups, addresses = dbstate.port_membership(session, vif["id"])
    assert groups and addresses
    for group in groups:
        assert worker.driver.security.member_ports[group][vif["id"]] == addresses
    assert before.keys() == worker.driver.security.member_ports.keys()
