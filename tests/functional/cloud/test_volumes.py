"""Volumes on real guests through the real `openstack` CLI (tests/fixtures/cloud.py: every worker
its own process, two simulated hosts, the first also running fabric-volume).

A volume is made on the volume host, attached to a running server on the OTHER host (its QEMU
reaches the volume over NBD across the underlay), and the guest writes a file on it; detached,
then attached to a second server (on the volume host: anti-affinity puts one server on each
host), which finds the file; a snapshot of it, and a volume made from the snapshot, carries the
file too, as does a volume made from an image of it (``image create --volume``).

What runs in the guests is a user-data script (tools/guest_image.py runs it at boot, its output
on the serial console): it watches /sys/block for virtio disks, names each by its serial (the
first 20 characters of the volume id: fabric/virt/libvirt/volumes.py), and either prints the
file ``note.txt`` found on it (a tar archive written straight on the block device: the test
guest's kernel has no filesystem modules) or writes one.
"""

from __future__ import annotations

import time

import pytest

from tests.fixtures.cloud import FLAVOR, Cloud
from tests.fixtures.guest_disk import ARCHIVE_BYTES
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]

SERIAL_LENGTH = 20
VOLUME_DEADLINE = 120.0

WATCH_DISKS = r"""#!/bin/sh
seen=" "
while true; do
    for d in /sys/block/vd*; do
        [ -e "$d/serial" ] || continue
        s=$(cat "$d/serial"); dev=/dev/${d##*/}
        case "$seen" in *" $s "*) continue ;; esac
        seen="$seen$s "
        if head -c __ARCHIVE_BYTES__ "$dev" | tar -tf - 2>/dev/null | grep -q '^note.txt$'; then
            echo "fabric-test: disk $s holds [$(head -c __ARCHIVE_BYTES__ "$dev" | tar -xOf - note.txt)]"
        else
            echo "written by $(hostname)" > /tmp/note.txt
            tar -cf "$dev" -C /tmp note.txt && sync && echo "fabric-test: disk $s written"
        fi
    done
    sleep 1
done
""".replace("__ARCHIVE_BYTES__", str(ARCHIVE_BYTES))


def wait_volume(cloud: Cloud, env: dict, volume: str, status: str, timeout: float = VOLUME_DEADLINE) -> dict:
    """``volume show`` once the volume's status is ``status``; fails the test on error or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        shown = cloud.osc(env, "volume", "show", volume, retry_unavailable=True)
        if shown["status"] == status:
            return shown
        if shown["status"].startswith("error") or time.monotonic() > deadline:
            pytest.fail(f"volume {volume} is {shown['status']}, not {status}\n{cloud.logs()}")
        time.sleep(0.5)


def wait_snapshot(cloud: Cloud, env: dict, snapshot: str) -> dict:
    deadline = time.monotonic() + VOLUME_DEADLINE
    while True:
        shown = cloud.osc(env, "volume", "snapshot", "show", snapshot, retry_unavailable=True)
        if shown["status"] == "available":
            return shown
        if shown["status"].startswith("error") or time.monotonic() > deadline:
            pytest.fail(f"snapshot {snapshot} is {shown['status']}\n{cloud.logs()}")
        time.sleep(0.5)


def wait_gone(cloud: Cloud, env: dict, listing: tuple[str, ...], name: str) -> None:
    deadline = time.monotonic() + VOLUME_DEADLINE
    while any(row["Name"] == name for row in cloud.osc(env, *listing, retry_unavailable=True)):
        if time.monotonic() > deadline:
            pytest.fail(f"{name} still listed by {' '.join(listing)}\n{cloud.logs()}")
        time.sleep(0.5)


def serial(volume_id: str) -> str:
    return volume_id[:SERIAL_LENGTH]


def test_a_volume_written_by_a_guest_on_another_host_is_read_by_a_second_guest(cloud, projects, tmp_path):
    vera = projects("vera")
    env = vera.env
    volume_host = cloud.hosts.volume_hosts[0].name
    network = cloud.osc(env, "network", "create", "--provider-network-type", "vxlan",
                        "--provider-segment", "4261", "net-v")
    cloud.osc(env, "subnet", "create", "--network", "net-v", "--subnet-range", "10.9.4.0/24", "net-v-sub")
    group = cloud.osc(env, "server", "group", "create", "--policy", "anti-affinity", "vol-spread")
    script = tmp_path / "watch.sh"
    script.write_text(WATCH_DISKS)
    for name in ("vm-va", "vm-vb"):
        cloud.osc(env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id, "--nic",
                  f"net-id={network['id']}", "--user-data", str(script), "--hint", f"group={group['id']}", name)
    volume = cloud.osc(env, "volume", "create", "--size", "1", "vol-v")
    wait_volume(cloud, env, volume["id"], "available")
    for name in ("vm-va", "vm-vb"):
        cloud.wait_status(env, name)
        cloud.wait_console(env, name, r"fabric-guest: metadata uuid=")  # the user-data script is running
    hosts = {name: cloud.host_of(env, name).name for name in ("vm-va", "vm-vb")}
    [remote] = [name for name, host in hosts.items() if host != volume_host]
    [local] = [name for name, host in hosts.items() if host == volume_host]

    # Attached to the server on the host that does not hold the volume: the guest writes on it.
    cloud.osc(env, "server", "add", "volume", remote, "vol-v", json_out=False)
    shown = wait_volume(cloud, env, volume["id"], "in-use")
    [attachment] = shown["attachments"]
    assert attachment["server_id"] == cloud.osc(env, "server", "show", remote)["id"]
    listed = cloud.osc(env, "server", "volume", "list", remote)
    assert [row["Volume ID"] for row in listed] == [volume["id"]] and listed[0]["Device"] == "/dev/vdb"
    cloud.wait_console(env, remote, rf"fabric-test: disk {serial(volume['id'])} written")

    # Detached (the guest lets go of it), attached to the second server, which finds the file.
    cloud.osc(env, "server", "remove", "volume", remote, "vol-v", json_out=False)
    wait_volume(cloud, env, volume["id"], "available")
    assert cloud.osc(env, "server", "volume", "list", remote) == []
    cloud.osc(env, "server", "add", "volume", local, "vol-v", json_out=False)
    wait_volume(cloud, env, volume["id"], "in-use")
    found = cloud.wait_console(env, local, rf"fabric-test: disk {serial(volume['id'])} holds \[([^\]]*)\]")
    assert found[1] == f"written by {remote}"
    cloud.osc(env, "server", "remove", "volume", local, "vol-v", json_out=False)
    wait_volume(cloud, env, volume["id"], "available")

    # Its bytes as a new image (`image create --volume`: Cinder's os-volume_upload_image, done by
    # the volume worker), and a volume made from that image: attached below, it holds the file too.
    uploaded = cloud.osc(env, "image", "create", "--volume", "vol-v", "--disk-format", "qcow2", "img-v")
    assert (uploaded["id"], uploaded["disk_format"], uploaded["volume_type"]) == (volume["id"], "qcow2",
                                                                                  "__DEFAULT__")
    wait_until(lambda: cloud.osc(env, "image", "show", uploaded["image_id"],
                                 retry_unavailable=True)["status"] == "active",
               VOLUME_DEADLINE, "the uploaded image to be active", workers=cloud.workers, interval=0.5)
    wait_volume(cloud, env, volume["id"], "available")
    from_image = cloud.osc(env, "volume", "create", "--image", uploaded["image_id"], "--size", "1", "vol-v-image")
    wait_volume(cloud, env, from_image["id"], "available")

    # A snapshot, and a volume made from it, attached to the first server again: the file is there.
    snapshot = cloud.osc(env, "volume", "snapshot", "create", "--volume", "vol-v", "snap-v")
    wait_snapshot(cloud, env, snapshot["id"])
    copy = cloud.osc(env, "volume", "create", "--snapshot", "snap-v", "vol-v-copy")
    wait_volume(cloud, env, copy["id"], "available")
    cloud.osc(env, "server", "add", "volume", remote, "vol-v-copy", json_out=False)
    wait_volume(cloud, env, copy["id"], "in-use")
    found = cloud.wait_console(env, remote, rf"fabric-test: disk {serial(copy['id'])} holds \[([^\]]*)\]")
    assert found[1] == f"written by {remote}"
    cloud.osc(env, "server", "add", "volume", remote, "vol-v-image", json_out=False)
    wait_volume(cloud, env, from_image["id"], "in-use")
    found = cloud.wait_console(env, remote, rf"fabric-test: disk {serial(from_image['id'])} holds \[([^\]]*)\]")
    assert found[1] == f"written by {remote}"

    # A hard reboot defines the guest again from its definition, which keeps the volume.
    seen = f"fabric-test: disk {serial(copy['id'])} holds [written by {remote}]"
    before = cloud.console(env, remote).count(seen)
    cloud.osc(env, "server", "reboot", "--hard", remote, json_out=False)
    cloud.wait_status(env, remote)
    wait_until(lambda: cloud.console(env, remote).count(seen) > before, 180,
               "the rebooted guest to find the volume again", workers=cloud.workers, interval=1)

    # A volume cannot be deleted while attached; the server's delete detaches it.
    refused = cloud.cli.run(["volume", "delete", "vol-v-copy"], env)
    assert refused[0] != 0
    cloud.osc(env, "server", "delete", "--wait", remote, local, json_out=False)
    wait_volume(cloud, env, copy["id"], "available")
    wait_volume(cloud, env, from_image["id"], "available")
    cloud.osc(env, "volume", "delete", "vol-v-copy", "vol-v-image", json_out=False)
    cloud.osc(env, "image", "delete", uploaded["image_id"], json_out=False)
    cloud.osc(env, "volume", "snapshot", "delete", "snap-v", json_out=False)
    wait_gone(cloud, env, ("volume", "snapshot", "list"), "snap-v")
    cloud.osc(env, "volume", "delete", "vol-v", json_out=False)
    wait_gone(cloud, env, ("volume", "list"), "vol-v")
    wait_gone(cloud, env, ("volume", "list"), "vol-v-copy")
    wait_gone(cloud, env, ("volume", "list"), "vol-v-image")


def test_a_server_boots_from_a_volume_made_from_the_image(cloud, projects, tmp_path):
    """`server create --volume`: the guest's first disk (vda) is the volume, reached over NBD. The test
    guest boots a kernel and initrd directly (the image's kernel_id and ramdisk_id, copied onto the
    volume with the image's properties, as Nova's libvirt driver boots such an image from a
    volume), so what the guest shows is that its vda is the volume: it finds a disk with the
    volume's serial holding the image's bytes (zeros, no tar archive) and writes on it."""
    wes = projects("wes")
    env = wes.env
    network = cloud.osc(env, "network", "create", "--provider-network-type", "vxlan",
                        "--provider-segment", "4262", "net-w")
    cloud.osc(env, "subnet", "create", "--network", "net-w", "--subnet-range", "10.9.5.0/24", "net-w-sub")
    # A raw disk image (volumes are made from qcow2 or raw) naming the test guest's kernel and ramdisk.
    props = cloud.osc(env, "image", "show", cloud.image_id)["properties"]
    (tmp_path / "disk.raw").write_bytes(bytes(1024 * 1024))
    image = cloud.osc(env, "image", "create", "--file", str(tmp_path / "disk.raw"), "--disk-format", "raw",
                      "--container-format", "bare", "--property", f"kernel_id={props['kernel_id']}",
                      "--property", f"ramdisk_id={props['ramdisk_id']}",
                      "--property", f"os_command_line={props['os_command_line']}", "guest-on-disk")
    volume = cloud.osc(env, "volume", "create", "--image", image["id"], "--size", "1", "vol-boot")
    shown = wait_volume(cloud, env, volume["id"], "available")
    assert str(shown["bootable"]).lower() == "true"
    script = tmp_path / "watch.sh"
    script.write_text(WATCH_DISKS)
    cloud.osc(env, "server", "create", "--flavor", FLAVOR, "--volume", "vol-boot", "--nic",
              f"net-id={network['id']}", "--user-data", str(script), "vm-boot")
    server = cloud.wait_status(env, "vm-boot")
    assert not server["image"] or "volume" in str(server["image"]).lower()
    cloud.wait_console(env, "vm-boot", rf"fabric-test: disk {serial(volume['id'])} written")
    [attachment] = wait_volume(cloud, env, volume["id"], "in-use")["attachments"]
    assert attachment["device"] == "/dev/vda" and attachment["server_id"] == server["id"]
    cloud.osc(env, "server", "delete", "--wait", "vm-boot", json_out=False)
    wait_volume(cloud, env, volume["id"], "available")  # not delete_on_termination: it outlives the server
    cloud.osc(env, "volume", "delete", "vol-boot", json_out=False)
    wait_gone(cloud, env, ("volume", "list"), "vol-boot")
    cloud.osc(env, "image", "delete", image["id"], json_out=False)
