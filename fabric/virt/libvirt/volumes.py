"""Volumes as libvirt disks: the ``<disk>`` element of a volume and how to find it again.

A compute host never opens a volume's file: QEMU reaches every volume over the
network, as the volume service's ``connection_info`` says, from any host (the
volume host's own included).

Transport, measured on this machine (issue 21; /tmp experiment in two network
namespaces joined by a veth pair, IPv6 off, ``qemu-nbd --persistent --shared=4
-f qcow2 --cache=none`` serving a 1 GiB qcow2 in one, a TCG guest of the test
image under ``qemu:///embed`` in the other):

- NBD: ``attachDeviceFlags`` of a ``<disk type='network'><source protocol='nbd'>``
  returned in 0.12 s, the guest's kernel logged ``virtio_blk virtio0: [vda]
  2097152 512-byte logical blocks`` (the guest names disks in the order it sees
  them: libvirt's ``target dev`` is only a hint), and ``detachDeviceFlags`` had
  the disk out of the live definition 0.45 s later (the guest ejected it by ACPI
  hot-plug). Nothing but ``qemu-nbd`` and QEMU, both already needed.
- iSCSI with the kernel target (LIO, ``targetcli``) cannot run here: it needs
  configfs, and ``/sys/kernel/config`` does not exist (no ``configfs`` in
  /proc/filesystems; modules cannot be loaded).

So volumes travel over NBD: ``connection_info = {"driver_volume_type": "nbd",
"data": {"host", "port", "export_name", "format"}}``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from fabric.exception import InvalidGuestSpec
from fabric.virt.driver import VolumeDisk

#: The guest reads this many characters of the volume id as the disk's serial
#: (/sys/block/vdX/serial): virtio-blk's serial field holds 20 bytes.
SERIAL_LENGTH = 20
#: Disk names a guest's volumes may take, in the order they are handed out.
DEVICE_NAMES = tuple(f"vd{letter}" for letter in "abcdefghijklmnopqrstuvwxyz")


def serial(volume_id: str) -> str:
    """The serial number the guest sees on the volume's disk."""
    return volume_id[:SERIAL_LENGTH]


def disk_element(disk: VolumeDisk, instance: str) -> ET.Element:
    """The ``<disk>`` of ``disk``. Raises InvalidGuestSpec for a transport other than NBD or a
    connection_info lacking host, port or export name."""
    info = disk.connection_info or {}
    kind = info.get("driver_volume_type")
    if kind != "nbd":
        raise InvalidGuestSpec(instance=instance, field="connection_info.driver_volume_type", value=kind,
                               reason="expected nbd (the only volume transport this driver speaks)")
    data = info.get("data") or {}
    missing = [key for key in ("host", "port", "export_name") if not data.get(key)]
    if missing:
        raise InvalidGuestSpec(instance=instance, field="connection_info.data", value=data,
                               reason=f"missing {', '.join(missing)}")
    fmt = data.get("format", "raw")
    element = ET.Element("disk", type="network", device="disk")
    # cache='none': every write the guest flushes is on the volume host before the flush
    # returns, so a detach (or a host lost) loses nothing the guest believed written.
    ET.SubElement(element, "driver", name="qemu", type=fmt, cache="none")
    source = ET.SubElement(element, "source", protocol="nbd", name=str(data["export_name"]))
    ET.SubElement(source, "host", name=str(data["host"]), port=str(int(data["port"])))
    ET.SubElement(element, "target", dev=disk.device, bus="virtio")
    ET.SubElement(element, "serial").text = serial(disk.volume_id)
    return element


def disk_xml(disk: VolumeDisk, instance: str) -> str:
    return ET.tostring(disk_element(disk, instance), encoding="unicode")


def volume_disks(domain: ET.Element, volume_id: str) -> list[ET.Element]:
    """The domain's ``<disk>`` elements of volume ``volume_id`` (found by their serial)."""
    wanted = serial(volume_id)
    return [d for d in domain.findall("./devices/disk")
            if (node := d.find("serial")) is not None and (node.text or "") == wanted]


def used_devices(domain: ET.Element) -> list[str]:
    """The target names of every disk the domain has."""
    return [t.get("dev", "") for t in domain.findall("./devices/disk/target")]
