"""The libvirt driver against libvirt's test driver (private state per test)."""

from __future__ import annotations

import subprocess
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fabric.exception import HypervisorError, Invalid
from fabric.virt.driver import BootImage, NetworkInterface, PowerState
from fabric.virt.libvirt import config
from fabric.virt.libvirt.driver import LibvirtDriver
from fabric.virt.libvirt.host import detect_virt_type
from tests.unit.virt.conftest import libvirt_settings, make_spec, node_uri

KNOWN_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
FOREIGN_UUID = "11111111-2222-4333-8444-555555555555"
PREDEFINED = f"""
  <domain type="test"><name>fabric-{KNOWN_UUID}</name><uuid>{KNOWN_UUID}</uuid>
    <memory unit="MiB">256</memory><vcpu>2</vcpu><os><type arch="x86_64">hvm</type></os></domain>
  <domain type="test"><name>someone-elses</name><uuid>{FOREIGN_UUID}</uuid>
    <memory unit="MiB">64</memory><vcpu>1</vcpu><os><type arch="x86_64">hvm</type></os></domain>
"""


@pytest.fixture
def libvirt_driver(tmp_path):
    drv = LibvirtDriver(libvirt_settings(tmp_path, node_uri(tmp_path, PREDEFINED)))
    drv.init_host("virt-test")
    yield drv
    drv.cleanup_host()


def _domain_xml(drv: LibvirtDriver, uuid: str) -> ET.Element:
    return ET.fromstring(drv.host.call(lambda c: c.lookupByUUIDString(uuid).XMLDesc(0)))


def test_only_fabric_guests_are_listed(libvirt_driver):
    assert libvirt_driver.list_instances() == [KNOWN_UUID]
    assert not libvirt_driver.instance_exists(FOREIGN_UUID)


def test_domain_xml_carries_flavor_kernel_nics_and_serial_log(libvirt_driver, tmp_path):
    spec = make_spec(3, vcpus=2, memory_mb=192, interfaces=(
        NetworkInterface(id="a", mac="52:54:00:00:00:0a", bridge="fabbr7", mtu=1450),
        NetworkInterface(id="b", mac="52:54:00:00:00:0b", tap="fabtap9"),
    ))
    libvirt_driver.spawn(spec)
    dom = _domain_xml(libvirt_driver, spec.uuid)
    assert dom.get("type") == "test"
    assert dom.findtext("name") == f"fabric-{spec.uuid}"
    assert dom.findtext("vcpu") == "2"
    assert int(dom.findtext("memory")) == 192 * 1024
    assert dom.findtext("os/kernel") == "/boot/vmlinuz-test"
    assert dom.findtext("os/initrd") == "/boot/initrd-test"
    assert dom.findtext("os/cmdline") == "console=ttyS0"
    bridge, tap = dom.findall("devices/interface")
    assert bridge.get("type") == "bridge" and bridge.find("source").get("bridge") == "fabbr7"
    assert bridge.find("mtu").get("size") == "1450"
    assert tap.get("type") == "ethernet"
    assert tap.find("target").get("dev") == "fabtap9" and tap.find("target").get("managed") == "no"
    assert dom.find("devices/serial/source").get("path") == str(tmp_path / "instances" / spec.uuid / "console.log")
    assert config.disk_gb_from_xml(ET.tostring(dom, encoding="unicode")) == 1


def test_kvm_xml_passes_the_host_cpu_through():
    xml = ET.fromstring(config.guest_xml(make_spec(1), "kvm", "/tmp/c.log", None))
    assert xml.get("type") == "kvm" and xml.find("cpu").get("mode") == "host-passthrough"
    qemu = ET.fromstring(config.guest_xml(make_spec(1), "qemu", "/tmp/c.log", None))
    assert qemu.find("cpu") is None


def test_disk_image_boots_a_qcow2_overlay_on_a_cached_base(libvirt_driver, tmp_path):
    base = tmp_path / "image.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    spec = make_spec(1, disk_gb=1, image=BootImage(disk_path=str(base), disk_format="qcow2"))
    libvirt_driver.spawn(spec)
    disk = tmp_path / "instances" / spec.uuid / "disk"
    info = subprocess.run(["qemu-img", "info", "--output=json", str(disk)], check=True,
                          capture_output=True, text=True).stdout
    cached = list((tmp_path / "instances" / "_base").iterdir())
    assert len(cached) == 1 and str(cached[0]) in info
    assert '"virtual-size": 1073741824' in info
    dom = _domain_xml(libvirt_driver, spec.uuid)
    assert dom.find("devices/disk/source").get("file") == str(disk)
    assert dom.find("devices/disk/driver").get("type") == "qcow2"
    assert dom.find("os/boot").get("dev") == "hd"
    libvirt_driver.destroy(spec.uuid)
    assert not disk.parent.exists()
    assert cached[0].exists()  # the base stays cached for the next guest


def test_unreadable_image_fails_spawn_and_leaves_nothing(libvirt_driver, tmp_path):
    spec = make_spec(1, image=BootImage(disk_path=str(tmp_path / "missing.qcow2")))
    with pytest.raises(HypervisorError, match="missing.qcow2"):
        libvirt_driver.spawn(spec)
    assert not libvirt_driver.instance_exists(spec.uuid)
    assert not (tmp_path / "instances" / spec.uuid).exists()


def test_console_output_is_the_tail_of_the_serial_log(libvirt_driver, tmp_path):
    spec = make_spec(1)
    libvirt_driver.spawn(spec)
    assert libvirt_driver.get_console_output(spec.uuid) == ""  # the test driver writes no log
    log = tmp_path / "instances" / spec.uuid / "console.log"
    log.write_text("early boot\n" + "x" * 100 + "\nlogin ready\n")
    assert libvirt_driver.get_console_output(spec.uuid, max_bytes=12) == "login ready\n"


def test_attach_to_a_stopped_guest_changes_its_definition(libvirt_driver):
    spec = make_spec(1)
    libvirt_driver.spawn(spec)
    libvirt_driver.power_off(spec.uuid)
    extra = NetworkInterface(id="x", mac="52:54:00:aa:bb:cc", tap="fabtap1")
    libvirt_driver.attach_interface(spec.uuid, extra)
    macs = [m.get("address") for m in _domain_xml(libvirt_driver, spec.uuid).findall("devices/interface/mac")]
    assert macs == ["52:54:00:00:00:01", "52:54:00:aa:bb:cc"]
    libvirt_driver.detach_interface(spec.uuid, extra)
    macs = [m.get("address") for m in _domain_xml(libvirt_driver, spec.uuid).findall("devices/interface/mac")]
    assert macs == ["52:54:00:00:00:01"]


def test_a_lost_connection_is_reopened_and_guests_found_again(libvirt_driver):
    conn = libvirt_driver.host.connection()
    conn.close()  # behind the driver's back, as when libvirtd restarts
    assert libvirt_driver.list_instances() == [KNOWN_UUID]
    assert libvirt_driver.get_info(KNOWN_UUID).power_state == PowerState.RUNNING
    assert libvirt_driver.host.reconnects == 1
    assert libvirt_driver.host.connection() is not conn


def test_libvirt_calls_run_off_the_calling_thread(libvirt_driver):
    caller = threading.get_ident()
    assert libvirt_driver.host.call(lambda conn: threading.get_ident()) != caller


def test_unreachable_uri_is_hypervisor_unavailable(tmp_path):
    from fabric.exception import HypervisorUnavailable

    drv = LibvirtDriver(libvirt_settings(tmp_path, f"test://{tmp_path}/no-such-node.xml"))
    with pytest.raises(HypervisorUnavailable, match="no-such-node.xml"):
        drv.init_host("virt-test")


@pytest.mark.parametrize("flags, modules, kvm, expected", [
    ("fpu vmx sse", ["kvm_intel"], True, "kvm"),
    ("fpu svm sse", ["kvm_amd"], True, "kvm"),
    ("fpu sse", ["kvm"], True, "qemu"),           # software /dev/kvm (PVM): no hardware flags
    ("fpu vmx sse", [], True, "qemu"),            # flags but no kvm_intel module
    ("fpu vmx sse", ["kvm_intel"], False, "qemu"),
])
def test_auto_virt_type_needs_real_hardware_virtualisation(tmp_path, flags, modules, kvm, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    for name in modules:
        (tmp_path / "sys" / name).mkdir(parents=True)
    (tmp_path / "sys").mkdir(exist_ok=True)
    dev = tmp_path / "kvm"
    if kvm:
        dev.touch()
    assert detect_virt_type("auto", str(cpuinfo), str(tmp_path / "sys"), str(dev)) == expected
    assert detect_virt_type("qemu", str(cpuinfo)) == "qemu"


def test_auto_on_this_host_never_picks_kvm_without_hardware_flags_and_bad_virt_type_is_refused():
    # This host's own files: true on a machine with working KVM as on one with a software
    # /dev/kvm (the parametrised cases above pin the whole rule).
    flags = {flag for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
             for flag in line.split(":", 1)[1].split()}
    chosen = detect_virt_type("auto")
    assert chosen in ("kvm", "qemu")
    if not flags & {"vmx", "svm"}:
        assert chosen == "qemu"
    with pytest.raises(Invalid, match="'xen'.*auto, kvm or qemu"):
        detect_virt_type("xen")


def test_libvirt_error_text_reaches_the_caller(libvirt_driver):
    spec = make_spec(1)
    libvirt_driver.spawn(spec)
    with pytest.raises(HypervisorError, match="not supported"):
        # the test driver cannot hot-plug: the libvirt reason is kept in the error
        libvirt_driver.attach_interface(spec.uuid, NetworkInterface(id="y", mac="52:54:00:aa:bb:dd", bridge="br1"))
