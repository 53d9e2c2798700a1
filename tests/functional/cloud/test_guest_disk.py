"""A file a real guest wrote on its own disk, through reboot, resize, cold migration and a snapshot,
on a VXLAN network across two simulated hosts (tests/fixtures/cloud.py: every worker its own
process, real QEMU guests, the real `openstack` CLI).

The test guest boots a kernel and initrd; its flavor's root disk is a blank qcow2 as vda
(fabric/virt/libvirt/driver.py), the instance's disk file that moves ship through the
objectstore and that a snapshot uploads. Its user-data script (tests/fixtures/guest_disk.py)
writes a marker there as a tar archive on the first boot and, at every boot, prints what vda
holds and the address eth0 took by DHCP.
"""

from __future__ import annotations

import secrets
import time

import pytest

from tests.fixtures.cloud import BOOT_DEADLINE, FLAVOR, address_of
from tests.fixtures.guest_disk import root_disk_script, wait_new_boot
from tests.fixtures.netns import ping_eventually

pytestmark = [pytest.mark.functional, pytest.mark.slow]

ADDRESS = "10.9.7.41"


def wait_image_active(cloud, env: dict, image: str) -> dict:
    deadline = time.monotonic() + BOOT_DEADLINE
    while True:
        shown = cloud.osc(env, "image", "show", image, retry_unavailable=True)
        if shown["status"] == "active":
            return shown
        if shown["status"] in ("killed", "deleted") or time.monotonic() > deadline:
            pytest.fail(f"image {image} is {shown['status']}, not active\n{cloud.logs()}")
        time.sleep(0.5)


def test_a_file_on_the_guests_disk_survives_reboot_resize_migration_and_boots_from_a_snapshot(
        cloud, projects, tmp_path):
    erin = projects("erin")
    env = erin.env
    cloud.allow_ping(erin)
    small, bigger = f"{FLAVOR}.disk1-{erin.name}", f"{FLAVOR}.disk2-{erin.name}"
    cloud.osc(env, "flavor", "create", "--ram", "128", "--vcpus", "1", "--disk", "1", small)
    cloud.osc(env, "flavor", "create", "--ram", "160", "--vcpus", "1", "--disk", "2", bigger)
    network = cloud.osc(env, "network", "create", "--provider-network-type", "vxlan",
                        "--provider-segment", "4271", "net-d")
    cloud.osc(env, "subnet", "create", "--network", "net-d", "--subnet-range", "10.9.7.0/24", "net-d-sub")
    marker = f"marker-{secrets.token_hex(4)}"
    script = tmp_path / "disk.sh"
    script.write_text(root_disk_script(marker))
    snapshot = None
    seen: set[str] = set()
    try:
        cloud.osc(env, "server", "create", "--flavor", small, "--image", cloud.image_id, "--nic",
                  f"net-id={network['id']},v4-fixed-ip={ADDRESS}", "--user-data", str(script), "vm-d")
        cloud.wait_status(env, "vm-d")
        first = wait_new_boot(cloud, env, "vm-d", seen, "the first boot to write its disk", BOOT_DEADLINE)
        written = f"{marker} from vm-d"
        assert (first.disk, first.note, first.address) == ("written", written, f"{ADDRESS}/24")

        # A soft reboot (ACPI shutdown, then start; no rebuild): the same disk, the note on it.
        cloud.osc(env, "server", "reboot", "--soft", "vm-d", json_out=False)
        cloud.wait_status(env, "vm-d")
        after = wait_new_boot(cloud, env, "vm-d", seen, "the rebooted guest to read its disk", BOOT_DEADLINE)
        assert (after.disk, after.note) == ("holds", written)

        # Resized (a bigger disk, grown under the note) and confirmed: the note and the address kept.
        cloud.osc(env, "server", "resize", "--flavor", bigger, "vm-d", json_out=False)
        shown = cloud.wait_status(env, "vm-d", ("VERIFY_RESIZE",))
        assert bigger in str(shown["flavor"]) and address_of(shown) == ADDRESS
        resized = wait_new_boot(cloud, env, "vm-d", seen, "the resized guest to read its disk", BOOT_DEADLINE)
        assert (resized.disk, resized.note, resized.address) == ("holds", written, f"{ADDRESS}/24")
        cloud.osc(env, "server", "resize", "confirm", "vm-d", json_out=False)
        shown = cloud.wait_status(env, "vm-d")
        assert address_of(shown) == ADDRESS

        # Cold-migrated to the other host and confirmed: the note crossed with the disk, the address
        # is the same (DHCP from the new host's dnsmasq) and answers there over the VXLAN network.
        source = cloud.host_of(env, "vm-d")
        cloud.osc(env, "server", "migrate", "vm-d", json_out=False)
        shown = cloud.wait_status(env, "vm-d", ("VERIFY_RESIZE",))
        dest = cloud.host_of(env, "vm-d")
        assert dest.name != source.name and address_of(shown) == ADDRESS
        moved = wait_new_boot(cloud, env, "vm-d", seen, "the migrated guest to read its disk", BOOT_DEADLINE)
        assert (moved.disk, moved.note, moved.address) == ("holds", written, f"{ADDRESS}/24")
        cloud.osc(env, "server", "resize", "confirm", "vm-d", json_out=False)
        shown = cloud.wait_status(env, "vm-d")
        assert cloud.host_of(env, "vm-d").name == dest.name and address_of(shown) == ADDRESS
        assert ping_eventually(dest.namespace, ADDRESS, 60)

        # A snapshot of the running guest boots a new server whose disk holds the note vm-d wrote.
        snapshot = cloud.osc(env, "server", "image", "create", "--name", "snap-d", "vm-d")["id"]
        image = wait_image_active(cloud, env, snapshot)
        assert image["disk_format"] == "qcow2" and image["properties"]["instance_uuid"] == shown["id"]
        cloud.wait_status(env, "vm-d")  # the snapshot left it running
        cloud.osc(env, "server", "create", "--flavor", bigger, "--image", snapshot, "--nic",
                  f"net-id={network['id']}", "--user-data", str(script), "vm-d2")
        cloud.wait_status(env, "vm-d2")
        copy = wait_new_boot(cloud, env, "vm-d2", set(), "the snapshot's server to read its disk", BOOT_DEADLINE)
        assert (copy.disk, copy.note) == ("holds", written)
    finally:
        servers = [row["ID"] for row in cloud.osc(env, "server", "list")]
        if servers:  # before their flavors and image go
            cloud.osc(env, "server", "delete", "--wait", *servers, json_out=False)
        if snapshot:
            cloud.osc(env, "image", "delete", snapshot, json_out=False)
        for flavor in (small, bigger):
            cloud.osc(env, "flavor", "delete", flavor, json_out=False)
