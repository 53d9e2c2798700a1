"""Drivers under test: the fake, and libvirt on its test driver with private state per test."""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET

import pytest

from fabric.config import Settings
from fabric.virt.driver import BootImage, GuestSpec, NetworkInterface

NODE_XML = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>
       <active>4</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>8388608</memory>
  {domains}
</node>
"""


def node_uri(tmp_path, domains: str = "") -> str:
    """A test:/// URI whose state is private to this test (libvirt's test driver)."""
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML.format(domains=domains))
    return f"test://{node}"


def libvirt_settings(tmp_path, uri: str) -> Settings:
    return Settings().replace(
        default={"host": "virt-test", "data_dir": str(tmp_path)},
        compute={"driver": "libvirt", "libvirt_uri": uri, "instances_path": str(tmp_path / "instances"),
                 "virt_type": "qemu"},
    )


def make_spec(n: int = 0, **overrides) -> GuestSpec:
    values = dict(
        uuid=str(uuidlib.uuid4()), name=f"guest{n}", vcpus=1, memory_mb=128, disk_gb=1,
        image=BootImage(kernel="/boot/vmlinuz-test", initrd="/boot/initrd-test", cmdline="console=ttyS0"),
        interfaces=(NetworkInterface(id=f"port{n}", mac=f"52:54:00:00:00:{n:02x}", bridge="fabbr0"),),
    )
    values.update(overrides)
    return GuestSpec(**values)


@pytest.fixture(params=["fake", "libvirt"])
def driver(request, tmp_path):
    """Each contract test runs on both drivers."""
    if request.param == "fake":
        from fabric.virt.fake import FakeDriver

        drv = FakeDriver(vcpus=4, memory_mb=8192, disk_gb=100, hostname="virt-test")
    else:
        from fabric.virt.libvirt.driver import LibvirtDriver

        drv = LibvirtDriver(libvirt_settings(tmp_path, node_uri(tmp_path)))
    drv.init_host("virt-test")
    yield drv
    drv.cleanup_host()


def nic_macs(driver, uuid: str) -> list[str]:
    """The MACs of the guest's NICs as its hypervisor holds them, in order (lower case): the
    fake's own record, or the libvirt domain's definition read back from libvirt."""
    from fabric.virt.fake import FakeDriver

    if isinstance(driver, FakeDriver):
        return [nic.mac.lower() for nic in driver.interfaces(uuid)]
    import libvirt

    xml = driver.host.call(lambda conn: conn.lookupByUUIDString(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return [mac.get("address").lower() for mac in ET.fromstring(xml).findall("./devices/interface/mac")]
