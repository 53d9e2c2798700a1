"""A network's devices exist only on the hosts that have ports on it, and go when the last
port leaves: two simulated hosts, each a network worker on the Linux driver, driven through
the calls compute makes (:class:`~fabric.network.api.NetworkService` over a memory:// broker)
with the ports bound in the database as compute binds them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from fabric import rpc
from fabric.context import RequestContext
from fabric.db.models import AddressAllocation, AddressPool, Datacenter, Network, Port, Subnet, TopologyHost
from fabric.network.api import NetworkService
from fabric.network.drivers.linux import LinuxDriver
from fabric.network.manager import NetworkManager
from fabric.network.model import DHCP_PORT_OWNER
from tests.fixtures.netns import pids_in, ping_eventually
from tests.functional.network.conftest import host_settings
from tests.functional.network.test_dhcp_nat import UDHCPC_SCRIPT, dhcp_client
from tests.unit.rpc.conftest import settings  # noqa: F401 - fixture

TUNNEL = {"h1": "192.168.77.1", "h2": "192.168.77.2"}
SPEC = {"id": "net-s", "network_type": "vxlan", "project_id": "proj", "segmentation_id": 620}


def bind(db, port_id: str, host: str, address: str, mac: str, netns: str | None = None) -> None:
    """A port bound to ``host`` with its address, as compute binds one (without ``netns``: the
    host's DHCP port). Owned by no guest, so in no security group's filter: the pings below
    test the L2 path alone (a guest port in no group gets only DHCP and metadata through)."""
    owner, binding = (None, {"kind": "veth", "netns": netns}) if netns else (DHCP_PORT_OWNER, {})
    with db.begin() as session:
        session.add(Port(id=port_id, network_id="net-s", project_id="proj", mac_address=mac, host=host,
                         device_owner=owner, binding=binding))
        session.flush()
        session.add(AddressAllocation(pool_id="sub-s", address=address, request_token=port_id, port_id=port_id))


@pytest.fixture
def two_hosts(netns, sqlite_db, settings, tmp_path):  # noqa: F811
    """(NetworkService, {host: manager}): workers h1 and h2 serving over one memory:// broker."""
    hosts = {name: netns(name) for name in TUNNEL}
    netns.underlay(hosts["h1"], hosts["h2"], TUNNEL["h1"], TUNNEL["h2"])
    with sqlite_db.begin() as session:
        session.add(Datacenter(id=1, name="default", prefix="10.64.0.0/16", host_bits=4, tenant_bits=4,
                               segment_bits=4, endpoint_bits=4))
        session.flush()
        session.add_all([TopologyHost(datacenter_id=1, name=name, number=number, tunnel_address=TUNNEL[name])
                         for number, name in enumerate(TUNNEL, 1)])
        session.add(Network(id="net-s", project_id="proj", network_type="vxlan", segmentation_id=620))
        session.add(Subnet(id="sub-s", network_id="net-s", project_id="proj", ip_version=4,
                           cidr="10.62.0.0/24", enable_dhcp=True))
        session.flush()
        session.add(AddressPool(id="sub-s", kind="subnet", subnet_id="sub-s", definition={}, size_limit=253))
    transport = rpc.get_transport(settings.rpc)
    managers, servers = {}, []
    try:
        for name, ns in hosts.items():
            host = host_settings(name, TUNNEL[name], str(tmp_path / name)).replace(
                rpc={"transport_url": settings.rpc.transport_url, "call_timeout": 10.0},
                metadata={"enabled": False})
            managers[name] = NetworkManager(host, db=sqlite_db, transport=transport,
                                            driver=LinuxDriver(host, netns=ns))
            server = rpc.RPCServer(transport, topic="network", host=name, endpoint=managers[name])
            server.start()
            servers.append(server)
        yield NetworkService(sqlite_db, transport, timeout=10), managers
    finally:
        for server in servers:
            server.stop()
            server.wait(5)
        for manager in managers.values():
            manager.driver.remove_all()
            manager.cleanup_host()
        transport.cleanup()


def devices(manager: NetworkManager) -> set[str]:
    """The network's bridge and VXLAN device present on the manager's host."""
    names = manager.driver.names
    present = {lk["name"] for lk in manager.driver.kernel.links(names.prefix)}
    return present & {names.bridge("net-s"), names.vxlan("net-s")}


def dnsmasq_running(ns: str) -> bool:
    return any(open(f"/proc/{pid}/comm").read().strip() == "dnsmasq" for pid in pids_in(ns))


def test_network_devices_follow_the_ports_of_each_host(two_hosts, sqlite_db, netns, tmp_path):
    service, managers = two_hosts
    h1, h2 = managers["h1"], managers["h2"]
    ctx = RequestContext()
    both = {h1.driver.names.bridge("net-s"), h1.driver.names.vxlan("net-s")}
    script = tmp_path / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)

    # A port only on h1: the network (and its DHCP server) is set up there, and not on h2.
    a1 = netns("a1")
    bind(sqlite_db, "dhcp-h1", "h1", "10.62.0.2", "02:00:00:00:62:f1")
    bind(sqlite_db, "a1", "h1", "10.62.0.11", "02:00:00:00:62:11", netns=a1)
    for manager in (h1, h2):  # each worker starts from the database
        manager.init_host()
        manager.network_created(ctx, SPEC)  # the API's announcement sets nothing up anywhere
    assert devices(h1) == both and devices(h2) == set()
    assert dnsmasq_running(h1.driver.netns) and not dnsmasq_running(h2.driver.netns)

    # Binding ports on h2 (and plugging them as compute does) creates the devices there.
    b1, b2 = netns("b1"), netns("b2")
    bind(sqlite_db, "dhcp-h2", "h2", "10.62.0.3", "02:00:00:00:62:f2")
    bind(sqlite_db, "b1", "h2", "10.62.0.21", "02:00:00:00:62:21", netns=b1)
    bind(sqlite_db, "b2", "h2", "10.62.0.22", "02:00:00:00:62:22", netns=b2)
    service.plug_port(ctx, "b1")
    service.plug_port(ctx, "b2")
    assert devices(h2) == both
    assert h2.driver.describe()["networks"]["net-s"]["flood_to"] == [TUNNEL["h1"]]
    # Guests take their addresses by DHCP from their own host's server.
    assert "10.62.0.11/24" in dhcp_client(a1, str(script))
    assert "10.62.0.21/24" in dhcp_client(b1, str(script))
    assert "10.62.0.22/24" in dhcp_client(b2, str(script))
    assert ping_eventually(a1, "10.62.0.21")  # across the hosts

    # The last port leaves h1 (compute unplugs, then deletes the port; its DHCP port stays).
    service.unplug_port(ctx, "a1")
    with sqlite_db.begin() as session:
        session.execute(sa.delete(Port).where(Port.id == "a1"))
    assert devices(h1) == set() and not dnsmasq_running(h1.driver.netns)
    assert h1.driver.kernel.links(h1.driver.names.prefix) == []
    h1.init_host()  # a restart keeps it so: the lingering DHCP port does not bring it back
    assert devices(h1) == set() and h1.driver.state.networks == {}

    # The ports that remain still reach each other, and h2 still serves them DHCP.
    assert devices(h2) == both and dnsmasq_running(h2.driver.netns)
    assert ping_eventually(b1, "10.62.0.22") and ping_eventually(b2, "10.62.0.21")
    assert ping_eventually(b1, "10.62.0.3")  # h2's DHCP server address, on its bridge
