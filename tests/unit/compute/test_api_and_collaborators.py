"""compute.api (state check, then cast) and the real collaborators' own logic."""

from __future__ import annotations

import pytest

from fabric.compute import states
from fabric.compute.api import ComputeService
from fabric.compute.collaborators import (
    IpamAddresses,
    RpcNetworkPlugger,
    dhcp_port_id,
    mac_for,
    port_id_for,
    request_token,
)
from fabric.context import RequestContext
from fabric.db.models import Network, Port, Subnet
from fabric.exception import Conflict, InstanceStateConflict, Invalid, NotFound, Unroutable
from tests.unit.compute.conftest import add_instance


class RecordingCaster:
    """The compute caster (fabric.compute.api.ComputeCaster) keeping what it was asked to send."""

    def __init__(self) -> None:
        self.casts: list[tuple] = []
        self.fail_with: Exception | None = None

    def instance_action(self, ctx, host, action, instance_id, **kwargs):
        if self.fail_with:
            raise self.fail_with
        self.casts.append((action, host, instance_id, kwargs))

    def get_console_output(self, ctx, host, instance_id, length):
        self.casts.append(("get_console_output", host, instance_id, {"length": length}))
        return "console\n"


@pytest.fixture
def service(sqlite_db):
    return ComputeService(sqlite_db, RecordingCaster())


def test_an_action_sets_its_task_then_casts_to_the_host(service):
    instance_id = add_instance(service.db, vm_state="active", task_state=None)
    service.act(RequestContext(), instance_id, "reboot:HARD")
    assert service.compute.casts == [("reboot_instance", "cmp1", instance_id, {"hard": True})]
    # A hard reboot has its own task, the one the worker runs it under.
    assert states.get_instance(service.db, instance_id)["task_state"] == "rebooting_hard"
    with pytest.raises(InstanceStateConflict, match="task_state 'rebooting_hard'"):
        service.act(RequestContext(), instance_id, "os-stop")  # one task at a time


def test_a_hard_reboot_may_override_a_soft_one_in_progress(service):
    instance_id = add_instance(service.db, vm_state="active", task_state=None)
    service.act(RequestContext(), instance_id, "reboot:SOFT")
    with pytest.raises(InstanceStateConflict, match="task_state 'rebooting'"):
        service.act(RequestContext(), instance_id, "reboot:SOFT")
    service.act(RequestContext(), instance_id, "reboot:HARD")
    assert [c[3] for c in service.compute.casts] == [{"hard": False}, {"hard": True}]
    assert states.get_instance(service.db, instance_id)["task_state"] == "rebooting_hard"


def test_an_action_from_the_wrong_state_is_refused_at_once(service):
    instance_id = add_instance(service.db, vm_state="stopped", task_state=None)
    with pytest.raises(InstanceStateConflict, match="vm_state 'stopped'"):
        service.act(RequestContext(), instance_id, "pause")
    unplaced = add_instance(service.db, host=None, vm_state="error", task_state=None)
    with pytest.raises(Conflict, match="not placed on a host"):
        service.act(RequestContext(), unplaced, "os-stop")
    assert service.compute.casts == []
    assert states.get_instance(service.db, unplaced)["task_state"] is None


def test_an_unroutable_cast_puts_the_task_back(service):
    instance_id = add_instance(service.db, vm_state="active", task_state="rebooting")
    service.compute.fail_with = Unroutable(target="compute.cmp1", method="reboot_instance")
    with pytest.raises(Unroutable):
        service.act(RequestContext(), instance_id, "reboot:HARD")
    assert states.get_instance(service.db, instance_id)["task_state"] == "rebooting"


def test_delete_without_host_is_immediate_and_with_host_casts_once(service):
    accepted = []
    unplaced = add_instance(service.db, host=None)
    service.delete(RequestContext(), unplaced, on_accepted=lambda session, row: accepted.append(row.id))
    assert states.get_instance(service.db, unplaced, include_deleted=True)["deleted"] is True
    placed = add_instance(service.db, vm_state="active", task_state=None)
    service.delete(RequestContext(), placed, on_accepted=lambda session, row: accepted.append(row.id))
    service.delete(RequestContext(), placed, on_accepted=lambda session, row: accepted.append(row.id))
    assert states.get_instance(service.db, placed)["task_state"] == "deleting"
    assert service.compute.casts == [("terminate_instance", "cmp1", placed, {})]
    assert accepted == [unplaced, placed]  # the repeat was not accepted again
    with pytest.raises(NotFound):
        service.delete(RequestContext(), unplaced)


def test_console_needs_an_active_server_on_a_host(service):
    with pytest.raises(Conflict, match="no console"):
        service.get_console_output(RequestContext(), add_instance(service.db, host=None, vm_state="active"))
    with pytest.raises(InstanceStateConflict, match="vm_state 'stopped'"):
        service.get_console_output(RequestContext(), add_instance(service.db, vm_state="stopped", task_state=None))
    active = add_instance(service.db, vm_state="active", task_state=None)
    assert service.get_console_output(RequestContext(), active, 5) == "console\n"
    assert service.compute.casts == [("get_console_output", "cmp1", active, {"length": 5})]


def test_nic_identities_are_stable_and_valid():
    assert mac_for("i1", 0) == mac_for("i1", 0) != mac_for("i1", 1)
    assert mac_for("i1", 0).startswith("fa:16:3e:") and len(mac_for("i1", 0)) == 17
    assert len(port_id_for("i1", 0)) == 36 and port_id_for("i1", 0) != port_id_for("i2", 0)
    assert request_token("i1", 2) == "instance:i1:2"


class RecordingIpam:
    def __init__(self) -> None:
        self.calls = []

    def allocate(self, ctx, token, **kwargs):
        self.calls.append(("allocate", token, kwargs))
        return {"pool": kwargs["subnet_id"] or "segment-pool", "address": "10.1.0.5", "prefixlen": 24,
                "gateway": "10.1.0.1"}

    def release(self, ctx, **kwargs):
        self.calls.append(("release", kwargs))
        return []


def test_ipam_addresses_take_the_network_s_ipv4_subnet_and_release_by_token(sqlite_db):
    with sqlite_db.begin() as session:
        session.add(Network(id="n1", project_id="p", network_type="flat"))
        session.add(Subnet(id="s6", network_id="n1", project_id="p", ip_version=6, cidr="fd00::/64",
                           ipv6_address_mode="slaac", ipv6_ra_mode="slaac"))  # EUI-64: nothing allocated
        session.add(Subnet(id="s4", network_id="n1", project_id="p", ip_version=4, cidr="10.1.0.0/24"))
        session.add(Network(id="empty", project_id="p", network_type="flat"))
    addresses = IpamAddresses.__new__(IpamAddresses)
    addresses.api, addresses.db = RecordingIpam(), sqlite_db
    instance = {"id": "inst-1", "host": "cmp1", "project_id": "p", "availability_zone": None}
    vif = addresses.allocate(RequestContext(), instance, 0, {"network_id": "n1"})
    port_id = port_id_for("inst-1", 0)
    assert addresses.api.calls[0][1:] == ("instance:inst-1:0", {
        "subnet_id": "s4", "segment_id": None, "host": "cmp1", "address": None, "port_id": port_id})
    assert (vif["id"], vif["network_id"], vif["address"], vif["pool"], vif["mac"]) == (
        port_id, "n1", "10.1.0.5", "s4", mac_for("inst-1", 0))
    # The NIC is a port bound the way the network worker reads it (fabric.network.dbstate).
    with sqlite_db.begin() as session:
        port = session.get(Port, port_id)
        assert (port.host, port.binding, port.device_id, port.device_owner, port.mac_address) == (
            "cmp1", {"kind": "tap"}, "inst-1", "compute:nova", mac_for("inst-1", 0))
    # The subnet serves DHCP (the default): the host gets its network:dhcp port, with an address.
    dhcp_port = dhcp_port_id("n1", "cmp1")
    assert addresses.api.calls[1][1:] == ("dhcp:n1:cmp1", {"subnet_id": "s4", "port_id": dhcp_port})
    with sqlite_db.begin() as session:
        port = session.get(Port, dhcp_port)
        assert (port.network_id, port.host, port.device_owner) == ("n1", "cmp1", "network:dhcp")
    addresses.release(RequestContext(), instance, 0, vif)
    assert addresses.api.calls[2] == ("release", {"pool": "s4", "request_token": "instance:inst-1:0"})
    with sqlite_db.begin() as session:
        assert session.get(Port, port_id) is None
    with pytest.raises(Invalid, match="network empty has no subnet"):
        addresses.allocate(RequestContext(), instance, 1, {"network_id": "empty"})
    with pytest.raises(NotFound, match="Network missing"):
        addresses.allocate(RequestContext(), instance, 1, {"network_id": "missing"})


class RecordingNetworkService:
    """The network service and rpcapi RpcNetworkPlugger talks to, keeping what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def plug_port(self, ctx, port_id):
        self.calls.append(("plug_port", port_id))
        return {"device": "tap-1"}

    def unplug(self, ctx, host, port_id):
        self.calls.append(("unplug", host, port_id))


def _port_status(db, port_id: str) -> str:
    with db.begin() as session:
        return session.get(Port, port_id).status


def test_a_plugged_port_reads_active_and_an_unplugged_or_unbound_one_down(sqlite_db):
    with sqlite_db.begin() as session:
        session.add(Network(id="n1", project_id="p", network_type="flat"))
        session.add(Subnet(id="s4", network_id="n1", project_id="p", ip_version=4, cidr="10.1.0.0/24",
                           enable_dhcp=False))
        session.add(Port(id="users-port", network_id="n1", project_id="p", mac_address="fa:16:3e:00:00:01"))
    plugger = RpcNetworkPlugger.__new__(RpcNetworkPlugger)
    plugger.service = plugger.api = RecordingNetworkService()
    plugger.db, plugger.settings = sqlite_db, None
    addresses = IpamAddresses.__new__(IpamAddresses)
    addresses.api, addresses.db = RecordingIpam(), sqlite_db
    instance = {"id": "inst-1", "host": "cmp1", "project_id": "p", "availability_zone": None}

    vif = addresses.allocate(RequestContext(), instance, 0, {"network_id": "n1", "port_id": "users-port"})
    assert _port_status(sqlite_db, "users-port") == "DOWN"  # bound, not plugged yet
    assert plugger.plug(RequestContext(), "cmp1", vif) == {"tap": "tap-1"}
    assert _port_status(sqlite_db, "users-port") == "ACTIVE"
    plugger.unplug(RequestContext(), "cmp1", vif)
    assert _port_status(sqlite_db, "users-port") == "DOWN"
    plugger.plug(RequestContext(), "cmp1", vif)
    addresses.release(RequestContext(), instance, 0, vif)  # the user's port outlives the server, unbound
    with sqlite_db.begin() as session:
        port = session.get(Port, "users-port")
        assert (port.device_id, port.host, port.status) == (None, None, "DOWN")
    assert plugger.service.calls == [("plug_port", "users-port"), ("unplug", "cmp1", "users-port"),
                                     ("plug_port", "users-port")]


def test_a_nic_whose_stable_mac_another_port_has_takes_the_next_and_keeps_it(db):
    with db.begin() as session:
        session.add(Network(id="n1", project_id="p", network_type="flat"))
        session.add(Subnet(id="s4", network_id="n1", project_id="p", ip_version=4, cidr="10.1.0.0/24",
                           enable_dhcp=False))
        session.flush()
        # 24 bits of MAC: on a network of 10,000 ports about three pairs share one.
        session.add(Port(id="squatter", network_id="n1", project_id="p", mac_address=mac_for("inst-2", 0)))
    addresses = IpamAddresses.__new__(IpamAddresses)
    addresses.api, addresses.db = RecordingIpam(), db
    instance = {"id": "inst-2", "host": "cmp1", "project_id": "p", "availability_zone": None}
    vif = addresses.allocate(RequestContext(), instance, 0, {"network_id": "n1"})
    assert vif["mac"] == mac_for("inst-2", 0, 1) != mac_for("inst-2", 0)
    with db.begin() as session:
        assert session.get(Port, port_id_for("inst-2", 0)).mac_address == vif["mac"]
    # A redelivered build finds its port, with the MAC it was given.
    assert addresses.allocate(RequestContext(), instance, 0, {"network_id": "n1"})["mac"] == vif["mac"]
