"""The libvirt driver's moves and snapshots on libvirt's test driver with real qcow2 disks: two
"hosts" (each its own test:/// node and instances path), data written into a guest's disk with
qemu-io, and read back wherever the guest went."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import xml.etree.ElementTree as ET

import pytest

from fabric.exception import GuestNotFound, HypervisorError
from fabric.virt.driver import BootImage, PowerState
from fabric.virt.libvirt.driver import LibvirtDriver
from tests.unit.virt.conftest import libvirt_settings, make_spec, node_uri
from tests.unit.virt.test_volumes import volume

PATTERN = "0x5a"


def _driver(tmp_path, name: str) -> LibvirtDriver:
    root = tmp_path / name
    root.mkdir()
    drv = LibvirtDriver(libvirt_settings(root, node_uri(root)))
    drv.init_host(name)
    return drv


@pytest.fixture
def hosts(tmp_path):
    made = [_driver(tmp_path, "src"), _driver(tmp_path, "dst")]
    yield made
    for drv in made:
        drv.cleanup_host()


def _qemu_io(disk, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(disk)], capture_output=True, text=True)


def _holds_the_pattern(disk) -> bool:
    done = _qemu_io(disk, f"read -P {PATTERN} 1M 64k")
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout + done.stderr


def _guest_with_data(drv: LibvirtDriver, tmp_path):
    """A guest booting a 64 MiB qcow2 image, with 64 KiB of PATTERN written at 1 MiB into its disk."""
    base = tmp_path / "image.qcow2"
    if not base.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    spec = make_spec(1, disk_gb=1, image=BootImage(disk_path=str(base), disk_format="qcow2"))
    drv.spawn(spec)
    disk = drv.instances_path / spec.uuid / "disk"
    assert _qemu_io(disk, f"write -P {PATTERN} 1M 64k").returncode == 0
    assert _holds_the_pattern(disk)
    return spec


def test_a_cold_migration_carries_the_disk_to_the_other_host(hosts, tmp_path):
    src, dst = hosts
    spec = _guest_with_data(src, tmp_path)
    shipped = src.migrate_disk_and_power_off(spec.uuid)
    assert src.list_instances() == [] and (src.instances_path / f"{spec.uuid}_resize").is_dir()
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", shipped], capture_output=True,
                                     text=True, check=True).stdout)
    assert "backing-filename" not in info  # standalone: the destination has no copy of the base
    assert src.migrate_disk_and_power_off(spec.uuid) == shipped  # idempotent

    bigger = dataclasses.replace(spec, disk_gb=2, memory_mb=256)
    dst.finish_migration(bigger, shipped, power_on=True)
    assert dst.get_info(spec.uuid).power_state is PowerState.RUNNING
    assert dst.get_info(spec.uuid).memory_mb == 256
    moved = dst.instances_path / spec.uuid / "disk"
    assert _holds_the_pattern(moved)
    size = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(moved)], capture_output=True,
                                     text=True, check=True).stdout)["virtual-size"]
    assert size == 2 * 1024**3
    src.confirm_migration(spec.uuid)
    assert not (src.instances_path / f"{spec.uuid}_resize").exists()


def test_a_reverted_resize_on_one_host_brings_the_old_guest_back(hosts, tmp_path):
    src, _ = hosts
    spec = _guest_with_data(src, tmp_path)
    shipped = src.migrate_disk_and_power_off(spec.uuid)
    src.finish_migration(dataclasses.replace(spec, memory_mb=256, disk_gb=2), shipped, power_on=True)
    assert src.get_info(spec.uuid).memory_mb == 256
    src.destroy(spec.uuid)  # the revert's first half, on the destination (this host)
    src.finish_revert_migration(spec.uuid, power_on=False)
    info = src.get_info(spec.uuid)
    assert (info.memory_mb, info.power_state) == (128, PowerState.SHUTDOWN)
    assert _holds_the_pattern(src.instances_path / spec.uuid / "disk")
    src.finish_revert_migration(spec.uuid, power_on=False)  # already back: nothing happens
    with pytest.raises(GuestNotFound):
        src.finish_revert_migration(make_spec(2).uuid, power_on=True)


def test_a_snapshot_of_a_running_guest_holds_its_data_and_leaves_it_running(hosts, tmp_path):
    src, _ = hosts
    spec = _guest_with_data(src, tmp_path)
    target = tmp_path / "snap.qcow2"
    src.snapshot(spec.uuid, str(target), "qcow2")
    assert _holds_the_pattern(target)
    assert src.get_info(spec.uuid).power_state is PowerState.RUNNING
    raw = tmp_path / "snap.raw"
    src.snapshot(spec.uuid, str(raw), "raw")
    with open(raw, "rb") as data:
        data.seek(1024 * 1024)
        assert data.read(65536) == b"\x5a" * 65536
    kernel_only = make_spec(3, disk_gb=0)  # a flavor without disk: no local disk at all
    src.spawn(kernel_only)
    with pytest.raises(HypervisorError, match="nothing to snapshot"):
        src.snapshot(kernel_only.uuid, str(tmp_path / "none"), "qcow2")


def _file_disks(drv: LibvirtDriver, uuid: str) -> dict[str, str]:
    """Target device -> file of the guest's file-backed disks, as libvirt holds its definition."""
    root = ET.fromstring(drv.host.call(lambda c: c.lookupByUUIDString(uuid).XMLDesc(0)))
    return {d.find("target").get("dev"): d.find("source").get("file") for d in root.findall("devices/disk")
            if d.get("type") == "file"}


def _disk_info(disk) -> dict:
    return json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True,
                                     text=True, check=True).stdout)


def test_a_kernel_booted_guest_gets_a_blank_disk_of_its_flavor_that_moves_and_snapshots_carry(hosts, tmp_path):
    src, dst = hosts
    spec = make_spec(4, disk_gb=1)  # kernel + initrd, no disk image
    src.spawn(spec)
    disk = src.instances_path / spec.uuid / "disk"
    info = _disk_info(disk)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 1024**3) and "backing-filename" not in info
    assert _file_disks(src, spec.uuid) == {"vda": str(disk)}
    assert _qemu_io(disk, f"write -P {PATTERN} 1M 64k").returncode == 0

    # Resized onto the other host with a bigger disk: the data went with it.
    shipped = src.migrate_disk_and_power_off(spec.uuid)
    dst.finish_migration(dataclasses.replace(spec, disk_gb=2), shipped, power_on=True)
    src.confirm_migration(spec.uuid)
    moved = dst.instances_path / spec.uuid / "disk"
    assert _holds_the_pattern(moved) and _disk_info(moved)["virtual-size"] == 2 * 1024**3

    # A snapshot holds it, and a guest booting the same kernel on that snapshot (an overlay on it) too.
    snap = tmp_path / "snap.qcow2"
    dst.snapshot(spec.uuid, str(snap), "qcow2")
    from_snapshot = make_spec(5, disk_gb=2, image=dataclasses.replace(spec.image, disk_path=str(snap)))
    dst.spawn(from_snapshot)
    assert _holds_the_pattern(dst.instances_path / from_snapshot.uuid / "disk")


def test_a_guest_without_flavor_disk_or_with_a_volume_as_vda_gets_no_local_disk(hosts):
    src, _ = hosts
    for spec in (make_spec(6, disk_gb=0), make_spec(7, disk_gb=1, volumes=(volume("vda"),))):
        src.spawn(spec)
        assert not (src.instances_path / spec.uuid / "disk").exists()
        assert _file_disks(src, spec.uuid) == {}
