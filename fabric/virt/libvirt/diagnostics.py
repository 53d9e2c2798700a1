"""A libvirt domain's counters in Nova's pre-2.48 diagnostics names.

Each group of counters is read on its own and left out when libvirt cannot give it: on
hosts without per-guest cgroups (see HOSTNOTES) CPU statistics calls fail, and a guest
that is shut off has no interface or block statistics.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt


def domain_diagnostics(dom: libvirt.virDomain) -> dict[str, int | str]:
    """``memory`` (KiB), ``memory-<stat>``, ``cpuN_time`` (ns), ``<disk>_read/_read_req/_write/
    _write_req/_errors`` and ``<nic>_rx/_rx_packets/_rx_errors/_rx_drop/_tx...``."""
    out: dict[str, int | str] = {}
    _state, max_kib, _mem, _vcpus, _cpu_time = dom.info()
    out["memory"] = max_kib
    root = ET.fromstring(dom.XMLDesc(0))
    try:
        for index, vcpu in enumerate(dom.vcpus()[0]):
            out[f"cpu{index}_time"] = vcpu[2]
    except libvirt.libvirtError:
        pass  # no vCPU information while the guest is off
    try:
        for key, value in dom.memoryStats().items():
            out["memory-" + key] = value
    except libvirt.libvirtError:
        pass
    for target in root.findall("./devices/disk/target"):
        dev = target.get("dev")
        try:
            rd_req, rd_bytes, wr_req, wr_bytes, errs = dom.blockStats(dev)
        except libvirt.libvirtError:
            continue
        out.update({f"{dev}_read_req": rd_req, f"{dev}_read": rd_bytes, f"{dev}_write_req": wr_req,
                    f"{dev}_write": wr_bytes, f"{dev}_errors": errs})
    for target in root.findall("./devices/interface/target"):
        dev = target.get("dev")
        try:
            stats = dom.interfaceStats(dev)
        except libvirt.libvirtError:
            continue
        names = ("rx", "rx_packets", "rx_errors", "rx_drop", "tx", "tx_packets", "tx_errors", "tx_drop")
        out.update({f"{dev}_{name}": value for name, value in zip(names, stats, strict=True)})
    return out
