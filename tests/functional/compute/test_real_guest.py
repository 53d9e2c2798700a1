"""A real guest under QEMU (KVM where the hardware has it, TCG otherwise) built by the
compute manager, in a test namespace.

The compute host runs in a process inside the namespace (``qemu:///embed``,
so QEMU and its tap live there) with the product's own IPAM and network
workers behind RPC (compute_host.py): the network worker puts the NIC's tap on
the flat network's bridge and serves the address IPAM allocated from its
dnsmasq; the guest boots the kernel and initrd registered in the image store,
and holds a real claim on the host's compute_nodes row. The guest takes its
address by DHCP and answers ping; then reboot, stop, start, a kill behind
fabric's back (seen by the power sync) and delete each work, the claim is given
back, and nothing is left behind.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from fabric.db import Database
from fabric.db.models import AddressAllocation
from tests.fixtures.databases import unavailable
from tests.fixtures.netns import in_ns, ping, ping_eventually
from tests.fixtures.processes import wait_until
from tests.functional.compute.guest_host_client import GuestHost

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
import guest_image  # noqa: E402

BRIDGE, GATEWAY = "fabbr0", "10.77.0.1/24"
BOOT_DEADLINE = 90.0  # TCG on a loaded 2-core machine: boots measured 4-25 s


def _require(condition: bool, reason: str) -> None:
    if not condition:
        unavailable(reason)


@pytest.fixture(scope="session")
def guest():
    _require(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 is not installed")
    _require(shutil.which("apt-get") is not None, "apt-get is needed to build the guest image")
    return guest_image.ensure_guest_image()


@pytest.fixture
def compute_host(netns, tmp_path, guest):
    """A namespace with a bridge, and a compute host process inside it."""
    _require(subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode == 0,
             "libvirt's QEMU driver needs a libvirt-qemu user (useradd --system libvirt-qemu)")
    ns = netns("cmp")
    in_ns(ns, "ip", "link", "add", BRIDGE, "type", "bridge")
    in_ns(ns, "ip", "addr", "add", GATEWAY, "dev", BRIDGE)
    in_ns(ns, "ip", "link", "set", BRIDGE, "up")
    # QEMU's monitor socket path must fit in 108 bytes: keep the embed root short.
    root = Path(tempfile.mkdtemp(prefix="fabvm-", dir="/tmp"))
    try:
        host = GuestHost(ns, root, tmp_path / "compute_host.log", BRIDGE, GATEWAY, guest.__dict__)
        try:
            yield ns, host
        finally:
            host.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_guest_gets_its_ipam_address_and_survives_its_lifecycle(guest, compute_host):
    ns, host = compute_host
    assert host.virt_type in ("kvm", "qemu")
    instance_id = host.call("create_instance", vcpus=1, memory_mb=128, disk_gb=0, display_name="real")
    claimed = {"vcpus_used": 1, "memory_mb_used": 128, "disk_gb_used": 0, "running_vms": 1}
    assert host.call("node") == claimed  # the scheduler's claim, on this host's row
    timings = {}

    started = time.monotonic()
    host.call("build_instance", instance_id=instance_id)
    row = host.call("instance", instance_id=instance_id)
    assert (row["vm_state"], row["task_state"], row["power_state"]) == ("active", None, 1), row["fault"]
    (vif,) = row["network_info"]
    address = vif["address"]
    assert ipaddress.ip_address(address) in ipaddress.ip_network("10.77.0.0/24") and address != "10.77.0.1"
    assert ping_eventually(ns, address, BOOT_DEADLINE), host.call("get_console_output", instance_id=instance_id)
    timings["build->ping"] = time.monotonic() - started
    # The guest answers ping as soon as udhcpc sets its address; /init prints
    # the address it holds a moment later (on a loaded machine, after this
    # line would first read the console).
    wait_until(lambda: f"fabric-guest: eth0 {address}/24" in host.call("get_console_output", instance_id=instance_id),
               30, "the guest to report its IPAM address, taken by DHCP", interval=0.2)
    assert host.dhcp_hosts.read_text() == f"{vif['mac']},{address}\n"  # from the network worker's dnsmasq
    networking = host.call("network.describe_host_networking")
    assert networking["networks"]["net1"]["endpoints"] == [vif["id"]]
    assert networking["networks"]["net1"]["dhcp_pid"]
    assert len(host.qemu_pids()) == 1

    # Soft reboot: ACPI shutdown (the guest's acpid powers off), then a fresh boot.
    started = time.monotonic()
    host.call("reboot_instance", instance_id=instance_id)
    assert host.call("instance", instance_id=instance_id)["vm_state"] == "active"
    assert ping_eventually(ns, address, BOOT_DEADLINE)
    timings["reboot->ping"] = time.monotonic() - started
    # The guest answers ping as soon as its address is set; /init prints the
    # marker a moment later.
    wait_until(lambda: host.call("get_console_output", instance_id=instance_id).count(guest.ready_marker) == 2,
               30, "the guest's second ready line", interval=0.2)
    console = host.call("get_console_output", instance_id=instance_id)
    assert "fabric-guest: power button" in console  # graceful, not a reset

    started = time.monotonic()
    host.call("stop_instance", instance_id=instance_id)
    timings["stop"] = time.monotonic() - started
    row = host.call("instance", instance_id=instance_id)
    assert (row["vm_state"], row["task_state"], row["power_state"]) == ("stopped", None, 4)
    assert host.qemu_pids() == []
    assert not ping(ns, address)

    started = time.monotonic()
    host.call("start_instance", instance_id=instance_id)
    assert host.call("instance", instance_id=instance_id)["vm_state"] == "active"
    assert ping_eventually(ns, address, BOOT_DEADLINE)
    timings["start->ping"] = time.monotonic() - started

    # Killed behind fabric's back: the next power sync shows it stopped.
    (qemu,) = host.qemu_pids()
    os.kill(qemu, 9)

    def synced_stopped():
        host.call("sync_power_states")
        return host.call("instance", instance_id=instance_id)["vm_state"] == "stopped"

    wait_until(synced_stopped, 30, "the power sync to see the guest stopped", interval=0.2)

    started = time.monotonic()
    host.call("terminate_instance", instance_id=instance_id)
    timings["delete"] = time.monotonic() - started
    host.call("terminate_instance", instance_id=instance_id)  # again: no error
    row = host.call("instance", instance_id=instance_id)
    assert (row["vm_state"], row["deleted"]) == ("deleted", True)
    assert host.call("driver.list_instances") == []
    assert host.qemu_pids() == []
    links = in_ns(ns, "ip", "-o", "link", "show").stdout
    assert [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()] == ["lo", BRIDGE]
    assert not (host.instances / instance_id).exists()
    # Its last guest gone, the host no longer carries net1: its DHCP server and state went too
    # (the flat bridge is the operator's and stays).
    assert not host.dhcp_hosts.exists()
    assert "net1" not in host.call("network.describe_host_networking")["networks"]
    assert host.call("node") == dict.fromkeys(claimed, 0)  # the claim was given back
    db = Database(f"sqlite:///{host.root / 'fabric.sqlite'}")
    with db.begin() as session:  # the address went back to IPAM (the host's DHCP server port keeps its own)
        assert session.scalar(sa.select(sa.func.count()).select_from(AddressAllocation)
                              .where(~AddressAllocation.request_token.startswith("dhcp:"))) == 0
    db.dispose()
    print("guest timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
