"""Domain XML for a guest: built from a GuestSpec, read back for resources."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from fabric.virt.driver import GuestSpec, NetworkInterface
from fabric.virt.libvirt import volumes

#: Every domain fabric defines is named with this prefix; others are not ours.
NAME_PREFIX = "fabric-"
METADATA_NS = "https://fabric.invalid/xmlns/instance/1"


def domain_name(uuid: str) -> str:
    return NAME_PREFIX + uuid


def interface_element(vif: NetworkInterface) -> ET.Element:
    """A virtio NIC on a bridge, or on a tap the network worker created (managed='no')."""
    if vif.bridge:
        iface = ET.Element("interface", type="bridge")
        ET.SubElement(iface, "source", bridge=vif.bridge)
    else:
        iface = ET.Element("interface", type="ethernet")
        ET.SubElement(iface, "target", dev=vif.tap, managed="no")
    ET.SubElement(iface, "mac", address=vif.mac)
    ET.SubElement(iface, "model", type="virtio")
    if vif.mtu:
        ET.SubElement(iface, "mtu", size=str(vif.mtu))
    return iface


def interface_xml(vif: NetworkInterface) -> str:
    return ET.tostring(interface_element(vif), encoding="unicode")


def guest_xml(spec: GuestSpec, domain_type: str, console_log: str, disk_path: str | None,
              disk_format: str = "qcow2") -> str:
    """The domain XML for ``spec`` (domain_type: kvm, qemu or test)."""
    dom = ET.Element("domain", type=domain_type)
    ET.SubElement(dom, "name").text = domain_name(spec.uuid)
    ET.SubElement(dom, "uuid").text = spec.uuid
    meta = ET.SubElement(ET.SubElement(dom, "metadata"), f"{{{METADATA_NS}}}instance")
    ET.SubElement(meta, f"{{{METADATA_NS}}}name").text = spec.name
    ET.SubElement(meta, f"{{{METADATA_NS}}}disk_gb").text = str(spec.disk_gb)
    ET.SubElement(dom, "memory", unit="MiB").text = str(spec.memory_mb)
    ET.SubElement(dom, "vcpu").text = str(spec.vcpus)

    os_el = ET.SubElement(dom, "os")
    ET.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    image = spec.image
    if image.kernel:
        ET.SubElement(os_el, "kernel").text = image.kernel
        if image.initrd:
            ET.SubElement(os_el, "initrd").text = image.initrd
        if image.cmdline:
            ET.SubElement(os_el, "cmdline").text = image.cmdline
    else:
        ET.SubElement(os_el, "boot", dev="hd")

    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")  # the guest's power button: graceful shutdown
    ET.SubElement(features, "apic")
    if domain_type == "kvm":
        ET.SubElement(dom, "cpu", mode="host-passthrough")
    ET.SubElement(dom, "clock", offset="utc")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "destroy"

    devices = ET.SubElement(dom, "devices")
    if disk_path:
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type=disk_format)
        ET.SubElement(disk, "source", file=disk_path)
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
    for volume in spec.volumes:
        devices.append(volumes.disk_element(volume, spec.uuid))
    for vif in spec.interfaces:
        devices.append(interface_element(vif))
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=console_log, append="on")
    ET.SubElement(serial, "target", port="0")
    # No USB controller: nothing uses it without graphics, and probing it costs a
    # guest kernel ~1.5 s under TCG.
    ET.SubElement(devices, "controller", type="usb", model="none")
    ET.SubElement(devices, "memballoon", model="none")
    ET.register_namespace("fabric", METADATA_NS)
    return ET.tostring(dom, encoding="unicode")


def disk_gb_from_xml(xml: str) -> int:
    """The flavor disk size recorded in our metadata (0 when absent)."""
    root = ET.fromstring(xml)
    node = root.find(f".//{{{METADATA_NS}}}disk_gb")
    try:
        return int(node.text) if node is not None and node.text else 0
    except ValueError:
        return 0


def interface_macs(xml: str) -> list[str]:
    root = ET.fromstring(xml)
    return [m.get("address", "").lower() for m in root.findall("./devices/interface/mac")]
