"""compute.api (state check, then cast) and the real collaborators' own logic."""

from __future__ import annotations

import pytest

from fabric.compute import states
from fabric.compute.api import ComputeService
from fabric.compute.collaborators import (
    IpamAddresses,
    LocalImageStore,
    dhcp_port_id,
    mac_for,
    port_id_for,
    request_token,
)
from fabric.context import RequestContext
from fabric.db.models import Image, Network, Port, Subnet
from fabric.exception import Conflict, InstanceStateConflict, Invalid, NotFound, Unroutable
from tests.unit.compute.conftest import add_instance


class RecordingComputeAPI:
    def __init__(self) -> None:
        self.casts: list[tuple] = []
        self.fail_with: Exception | None = None

    def __getattr__(self, method):
        def cast(ctx, host, instance_id, **kwargs):
            if self.fail_with:
                raise self.fail_with
            self.casts.append((method, host, instance_id, kwargs))
        return cast


@pytest.fixture
def service(sqlite_db):
    svc = ComputeService.__new__(ComputeService)
    svc.db, svc.rpcapi = sqlite_db, RecordingComputeAPI()
    return svc


def test_an_action_sets_its_task_then_casts_to_the_host(service):
    instance_id = add_instance(service.db, vm_state="active", task_state=None)
    service.reboot(RequestContext(), instance_id, hard=True)
    assert service.rpcapi.casts == [("reboot_instance", "cmp1", instance_id, {"hard": True})]
    # A hard reboot has its own task, the one the HTTP API sets for it too.
    assert states.get_instance(service.db, instance_id)["task_state"] == "rebooting_hard"
    with pytest.raises(InstanceStateConflict, match="task_state 'rebooting_hard'"):
        service.stop(RequestContext(), instance_id)  # one task at a time


def test_an_action_from_the_wrong_state_is_refused_at_once(service):
    instance_id = add_instance(service.db, vm_state="stopped", task_state=None)
    with pytest.raises(InstanceStateConflict, match="vm_state 'stopped'"):
        service.pause(RequestContext(), instance_id)
    assert service.rpcapi.casts == []


def test_an_unroutable_cast_rolls_the_task_back(service):
    instance_id = add_instance(service.db, vm_state="active", task_state=None)
    service.rpcapi.fail_with = Unroutable(target="compute.cmp1", method="stop_instance")
    with pytest.raises(Unroutable):
        service.stop(RequestContext(), instance_id)
    assert states.get_instance(service.db, instance_id)["task_state"] is None


def test_delete_without_host_is_immediate_and_with_host_casts(service):
    unplaced = add_instance(service.db, host=None)
    service.delete(RequestContext(), unplaced)
    assert states.get_instance(service.db, unplaced, include_deleted=True)["deleted"] is True
    placed = add_instance(service.db, vm_state="active", task_state=None)
    service.delete(RequestContext(), placed)
    assert states.get_instance(service.db, placed)["task_state"] == "deleting"
    assert service.rpcapi.casts == [("terminate_instance", "cmp1", placed, {})]
    with pytest.raises(Conflict, match="no host"):
        service.get_console_output(RequestContext(), add_instance(service.db, host=None))


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
        session.add(Subnet(id="s6", network_id="n1", project_id="p", ip_version=6, cidr="fd00::/64"))
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
    with pytest.raises(Invalid, match="network empty has no IPv4 subnet"):
        addresses.allocate(RequestContext(), instance, 1, {"network_id": "empty"})
    with pytest.raises(NotFound, match="Network missing"):
        addresses.allocate(RequestContext(), instance, 1, {"network_id": "missing"})


def test_local_image_store_boots_disks_and_kernels(sqlite_db, tmp_path):
    for name in ("disk-img", "kern", "ramdisk"):
        (tmp_path / name).write_bytes(b"x")
    with sqlite_db.begin() as session:
        session.add(Image(id="disk-img", disk_format="qcow2"))
        session.add(Image(id="direct", disk_format="aki", properties={
            "kernel_id": "kern", "ramdisk_id": "ramdisk", "os_command_line": "console=ttyS0"}))
        session.add(Image(id="iso", disk_format="iso"))
    store = LocalImageStore(tmp_path, sqlite_db)
    ctx = RequestContext()
    disk = store.boot_image(ctx, {"id": "i", "image_id": "disk-img"})
    assert (disk.disk_path, disk.disk_format, disk.kernel) == (str(tmp_path / "disk-img"), "qcow2", None)
    kernel = store.boot_image(ctx, {"id": "i", "image_id": "direct"})
    assert (kernel.kernel, kernel.initrd, kernel.cmdline) == (str(tmp_path / "kern"), str(tmp_path / "ramdisk"),
                                                              "console=ttyS0")
    with pytest.raises(Invalid, match="'iso'"):
        store.boot_image(ctx, {"id": "i", "image_id": "iso"})
    with pytest.raises(NotFound):
        store.boot_image(ctx, {"id": "i", "image_id": "unknown"})
