"""A network's devices exist only on hosts that have ports on it, and go when the last port leaves."""

from __future__ import annotations

import sqlalchemy as sa

from fabric.context import RequestContext
from fabric.db.models import AddressAllocation, AddressPool, Network, Port, Subnet
from fabric.network import dbstate
from fabric.network.manager import NetworkManager
from fabric.network.model import DHCP_PORT_OWNER, ROUTER_INTERFACE_OWNER
from tests.unit.rpc.conftest import settings  # noqa: F401 - fixture

SPEC = {"id": "net-s", "network_type": "vxlan", "segmentation_id": 620}


def add_network(db) -> None:
    """net-s (DHCP on) with: a guest port on h2, DHCP ports on h1 and h2, a router leg (no host)."""
    with db.begin() as session:
        session.add(Network(id="net-s", project_id="proj", network_type="vxlan", segmentation_id=620))
        session.add(Subnet(id="sub-s", network_id="net-s", project_id="proj", ip_version=4,
                           cidr="10.62.0.0/24", enable_dhcp=True))
        session.flush()
        session.add_all([
            Port(id="guest-2", network_id="net-s", project_id="proj", mac_address="02:00:00:00:62:02",
                 host="h2", device_owner="compute:nova"),
            Port(id="dhcp-1", network_id="net-s", project_id="proj", mac_address="02:00:00:00:62:fd",
                 host="h1", device_owner=DHCP_PORT_OWNER),
            Port(id="dhcp-2", network_id="net-s", project_id="proj", mac_address="02:00:00:00:62:fe",
                 host="h2", device_owner=DHCP_PORT_OWNER),
            Port(id="leg", network_id="net-s", project_id="proj", mac_address="02:00:00:00:62:01",
                 device_owner=ROUTER_INTERFACE_OWNER),
        ])
        session.add(AddressPool(id="sub-s", kind="subnet", subnet_id="sub-s", definition={}, size_limit=253))
        session.flush()
        session.add_all([
            AddressAllocation(pool_id="sub-s", address="10.62.0.2", request_token="d1", port_id="dhcp-1"),
            AddressAllocation(pool_id="sub-s", address="10.62.0.3", request_token="d2", port_id="dhcp-2"),
            AddressAllocation(pool_id="sub-s", address="10.62.0.12", request_token="g2", port_id="guest-2"),
        ])


def test_a_host_carries_only_the_networks_it_has_guest_ports_on(sqlite_db, settings):  # noqa: F811
    add_network(sqlite_db)
    # h1 holds only its DHCP port (its last guest left): it carries nothing of net-s.
    h1 = dbstate.host_state(sqlite_db, "h1", settings.replace(default={"host": "h1"}))
    assert h1.networks == {} and h1.endpoints == {}
    # h2 has a guest: the network, with h2's own DHCP server address, and the guest's endpoint.
    h2 = dbstate.host_state(sqlite_db, "h2", settings.replace(default={"host": "h2"}))
    assert sorted(h2.networks) == ["net-s"]
    assert (h2.networks["net-s"].host_address, h2.networks["net-s"].dhcp) == ("10.62.0.3/24", True)
    assert sorted(h2.endpoints) == ["guest-2"] and h2.endpoints["guest-2"].address == "10.62.0.12"
    # A host with no port at all: nothing (the router's leg is bound to no host).
    assert dbstate.host_state(sqlite_db, "h3", settings.replace(default={"host": "h3"})).networks == {}
    with sqlite_db.begin() as session:
        ports = list(session.scalars(sa.select(Port).where(Port.network_id == "net-s")))
    assert dbstate.carried_networks([p for p in ports if p.host == "h1"]) == []
    assert dbstate.carried_networks([p for p in ports if p.host == "h2"]) == ["net-s"]


def test_the_worker_sets_a_network_up_at_the_first_plug_and_removes_it_at_the_last(settings):  # noqa: F811
    manager, ctx = NetworkManager(settings.replace(default={"host": "h1"})), RequestContext()
    manager.network_created(ctx, SPEC)
    assert manager.driver.state.networks == {}  # created, but no port here yet
    endpoint = {"id": "p1", "network_id": "net-s", "mac": "02:00:00:00:62:11"}
    manager.plug(ctx, endpoint, network=SPEC)
    manager.plug(ctx, {**endpoint, "id": "p2", "mac": "02:00:00:00:62:12"}, network=SPEC)
    manager.unplug(ctx, "p1")
    assert sorted(manager.driver.describe()["networks"]) == ["net-s"]  # p2 still needs it
    removed = manager.driver.calls.get("remove_network", 0)
    manager.unplug(ctx, "p2")
    assert manager.driver.describe()["networks"] == {}
    assert manager.driver.calls["remove_network"] == removed + 1
    manager.unplug(ctx, "p2")  # a redelivery removes nothing more
    assert manager.driver.calls["remove_network"] == removed + 1


def test_a_restarted_worker_drops_a_network_whose_last_guest_left(sqlite_db, settings):  # noqa: F811
    add_network(sqlite_db)
    manager = NetworkManager(settings.replace(default={"host": "h2"}), db=sqlite_db)
    manager.init_host()
    assert sorted(manager.driver.state.networks) == ["net-s"]
    with sqlite_db.begin() as session:
        session.execute(sa.delete(Port).where(Port.id == "guest-2"))
    manager.init_host()
    assert manager.driver.state.networks == {} and manager.driver.state.endpoints == {}
