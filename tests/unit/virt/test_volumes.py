"""Volumes on guests: attach and detach on both drivers, the <disk> libvirt gets, and guests
defined again keeping their volumes."""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET

import pytest

from fabric.exception import GuestNotFound, GuestStateInvalid, InvalidGuestSpec
from fabric.virt.driver import GuestSpec, PowerState, VolumeDisk
from fabric.virt.fake import FakeDriver
from fabric.virt.libvirt import volumes
from tests.unit.virt.conftest import make_spec


def nbd(port: int = 10809, export: str = "vol") -> dict:
    return {"driver_volume_type": "nbd",
            "data": {"host": "192.0.2.7", "port": port, "export_name": export, "format": "raw"}}


def volume(device: str = "vdb", port: int = 10809) -> VolumeDisk:
    return VolumeDisk(volume_id=str(uuidlib.uuid4()), device=device, connection_info=nbd(port, f"e{port}"))


def attached(driver, uuid: str) -> dict[str, str]:
    """volume serial -> device, as the hypervisor holds the guest's definition."""
    if isinstance(driver, FakeDriver):
        return {volumes.serial(d.volume_id): d.device for d in driver.volumes(uuid)}
    import libvirt

    root = ET.fromstring(driver.host.call(
        lambda c: c.lookupByUUIDString(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
    return {d.findtext("serial"): d.find("target").get("dev") for d in root.findall("devices/disk")
            if d.findtext("serial")}


def test_disk_element_is_an_nbd_network_disk_named_by_the_volume():
    disk = volume("vdc", 10811)
    element = volumes.disk_element(disk, "inst")
    assert element.get("type") == "network"
    assert element.find("driver").attrib == {"name": "qemu", "type": "raw", "cache": "none"}
    source = element.find("source")
    assert (source.get("protocol"), source.get("name")) == ("nbd", "e10811")
    assert source.find("host").attrib == {"name": "192.0.2.7", "port": "10811"}
    assert element.find("target").attrib == {"dev": "vdc", "bus": "virtio"}
    assert element.findtext("serial") == disk.volume_id[:20]


@pytest.mark.parametrize(("info", "field"), [
    ({"driver_volume_type": "iscsi", "data": {}}, "connection_info.driver_volume_type"),
    ({"driver_volume_type": "nbd", "data": {"host": "h", "port": 1}}, "connection_info.data"),
])
def test_disk_element_refuses_what_it_cannot_connect(info, field):
    with pytest.raises(InvalidGuestSpec) as err:
        volumes.disk_element(VolumeDisk(str(uuidlib.uuid4()), "vdb", info), "inst")
    assert field in str(err.value)


def test_spec_refuses_duplicate_or_bad_device_names():
    one, two = volume("vdb"), volume("vdb")
    with pytest.raises(InvalidGuestSpec, match="distinct"):
        make_spec(volumes=(one, two)).validate()
    with pytest.raises(InvalidGuestSpec, match="vdb"):
        make_spec(volumes=(VolumeDisk(one.volume_id, "sdb", one.connection_info),)).validate()


def test_spec_round_trips_its_volumes():
    spec = make_spec(volumes=(volume("vdb"), volume("vdc", 10810)))
    assert GuestSpec.from_dict(spec.to_dict()) == spec


# libvirt's test driver cannot hot-plug (no virDomainAttachDeviceFlags), so the contract is
# checked on shut-off guests here; hot-plug into running QEMU guests is
# tests/functional/cloud/test_volumes.py's.

def test_attach_detach_keeps_other_volumes(driver):
    spec = make_spec(1)
    driver.spawn(spec)
    driver.power_off(spec.uuid)
    first, second = volume("vdb"), volume("vdc", 10810)
    driver.attach_volume(spec.uuid, first)
    driver.attach_volume(spec.uuid, first)  # again: no error, no second disk
    driver.attach_volume(spec.uuid, second)
    assert attached(driver, spec.uuid) == {volumes.serial(first.volume_id): "vdb",
                                           volumes.serial(second.volume_id): "vdc"}
    driver.detach_volume(spec.uuid, first.volume_id)
    driver.detach_volume(spec.uuid, first.volume_id)  # not attached: no error
    assert attached(driver, spec.uuid) == {volumes.serial(second.volume_id): "vdc"}


def test_attach_refuses_a_device_name_in_use(driver):
    spec = make_spec(2)
    driver.spawn(spec)
    driver.power_off(spec.uuid)
    driver.attach_volume(spec.uuid, volume("vdb"))
    other = volume("vdb", 10812)
    with pytest.raises(GuestStateInvalid, match="vdb"):
        driver.attach_volume(spec.uuid, other)
    assert volumes.serial(other.volume_id) not in attached(driver, spec.uuid)


def test_unknown_guest_raises(driver):
    with pytest.raises(GuestNotFound):
        driver.attach_volume(str(uuidlib.uuid4()), volume())


def test_volumes_survive_start_and_reboot(driver):
    spec = make_spec(3)
    driver.spawn(spec)
    driver.power_off(spec.uuid)
    disk = volume("vdd")
    driver.attach_volume(spec.uuid, disk)
    driver.power_on(spec.uuid)
    driver.reboot(spec.uuid, hard=True)
    assert driver.get_info(spec.uuid).power_state == PowerState.RUNNING
    assert attached(driver, spec.uuid) == {volumes.serial(disk.volume_id): "vdd"}


def test_fake_driver_hot_plugs_into_a_running_guest():
    driver = FakeDriver(hostname="virt-test")
    spec = make_spec(4)
    driver.spawn(spec)
    disk = volume("vdb")
    driver.attach_volume(spec.uuid, disk)
    assert driver.get_info(spec.uuid).power_state == PowerState.RUNNING
    assert attached(driver, spec.uuid) == {volumes.serial(disk.volume_id): "vdb"}
    driver.detach_volume(spec.uuid, disk.volume_id)
    assert attached(driver, spec.uuid) == {}


def test_a_guest_defined_from_a_spec_with_volumes_has_them(driver):
    disks = (volume("vdb"), volume("vdc", 10813))
    spec = make_spec(5, volumes=disks)
    driver.spawn(spec)
    assert attached(driver, spec.uuid) == {volumes.serial(d.volume_id): d.device for d in disks}
