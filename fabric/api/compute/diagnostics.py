"""GET /servers/{id}/diagnostics (``openstack server show --diagnostics``; admin, as Nova's
default policy): the guest's counters, asked of the compute driver on the server's host by an
RPC call (fabric.virt.driver.ComputeDriver.get_diagnostics).

Below microversion 2.48 Nova's document is the driver's own flat dictionary (``memory``,
``cpu0_time``, ``vda_read``, ``vnet0_rx`` ...), and fabric serves it. openstacksdk, though,
reads only the standard fields 2.48 brought (``state``, ``num_cpus``, ``memory_details``,
``nic_details`` ...), whatever version it negotiated, so the document carries those too,
derived here from the same counters: a pre-2.48 document may hold any keys, and this way
the CLI shows the guest rather than a column of nulls. From 2.48 the document is the standard
fields alone, as Nova's.
"""

from __future__ import annotations

import re
from typing import Any

import falcon
import sqlalchemy as sa

from fabric import exception
from fabric.api import common
from fabric.api.compute import microversion
from fabric.api.compute.lookup import get_instance
from fabric.compute import states
from fabric.db.models import ComputeNode
from fabric.virt.driver import PowerState

_CPU = re.compile(r"cpu(\d+)_time")
_NIC = re.compile(r"(.+)_rx")
_DISK = re.compile(r"(.+)_read_req")


def _power_state_name(value: int) -> str:
    try:
        return PowerState(value).name.lower()
    except ValueError:
        return "nostate"


def standard_fields(counters: dict[str, Any], power_state: int, hypervisor_type: str | None) -> dict[str, Any]:
    """Nova 2.48's diagnostics fields, from a driver's flat counters."""
    cpus = sorted((int(m[1]), value) for key, value in counters.items() if (m := _CPU.fullmatch(key)))
    nics = sorted(m[1] for key in counters if (m := _NIC.fullmatch(key)))
    disks = sorted(m[1] for key in counters if (m := _DISK.fullmatch(key)))
    memory_kib = counters.get("memory")
    used_kib = counters.get("memory-actual", memory_kib)
    return {
        "state": counters.get("state") or _power_state_name(power_state),
        "driver": hypervisor_type, "hypervisor": hypervisor_type, "hypervisor_os": None,
        "uptime": counters.get("uptime"), "config_drive": False,
        "num_cpus": len(cpus), "num_nics": len(nics), "num_disks": len(disks),
        "cpu_details": [{"id": index, "time": time, "utilisation": None} for index, time in cpus],
        "memory_details": {"maximum": memory_kib // 1024 if isinstance(memory_kib, int) else None,
                           "used": used_kib // 1024 if isinstance(used_kib, int) else None},
        "nic_details": [{"mac_address": None, "rx_octets": counters.get(f"{nic}_rx"),
                         "rx_packets": counters.get(f"{nic}_rx_packets"), "rx_errors": counters.get(f"{nic}_rx_errors"),
                         "rx_drop": counters.get(f"{nic}_rx_drop"), "rx_rate": None,
                         "tx_octets": counters.get(f"{nic}_tx"), "tx_packets": counters.get(f"{nic}_tx_packets"),
                         "tx_errors": counters.get(f"{nic}_tx_errors"), "tx_drop": counters.get(f"{nic}_tx_drop"),
                         "tx_rate": None} for nic in nics],
        "disk_details": [{"read_bytes": counters.get(f"{disk}_read"), "read_requests": counters.get(f"{disk}_read_req"),
                          "write_bytes": counters.get(f"{disk}_write"),
                          "write_requests": counters.get(f"{disk}_write_req"),
                          "errors_count": counters.get(f"{disk}_errors")} for disk in disks],
    }


class ServerDiagnostics:
    def on_get(self, req, resp, server_id):
        context = common.ctx(req)
        deps = common.deps(req)
        with deps.db.begin() as session:
            instance = get_instance(session, context, server_id)
            host, vm_state, power_state = instance.host, instance.vm_state, instance.power_state
            hypervisor_type = session.scalar(sa.select(ComputeNode.hypervisor_type).where(ComputeNode.host == host))
        if not host or vm_state == states.BUILDING:
            raise exception.Conflict(reason=f"server {server_id} is {vm_state} and not on a host yet; it has no "
                                            f"diagnostics")
        counters = deps.clients.compute.get_diagnostics(context, host=host, instance_id=server_id)
        standard = standard_fields(counters, power_state, hypervisor_type)
        common.respond(resp, standard if microversion.at_least(req, microversion.STANDARD_DIAGNOSTICS)
                       else counters | standard)


def register(app: falcon.App, prefix: str) -> None:
    app.add_route(f"{prefix}/servers/{{server_id}}/diagnostics", ServerDiagnostics())
