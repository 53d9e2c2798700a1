"""A real guest (QEMU, libvirt) cold-migrated between two simulated hosts through the real
`openstack` CLI and confirmed, then resized back and reverted (tests/fixtures/cloud.py: every worker its own process, each
host a network namespace with its own libvirt compute and linux network workers).

The guest boots from kernel + initrd and has no disk (tools/guest_image.py), so what this
shows is the move of a running guest's definition and network: it boots again on the other
host with the same address (DHCP from that host's dnsmasq, the port bound there), answers a
ping there, and nothing of it is left on its first host once confirmed. (Disk contents
crossing hosts are shown on libvirt's test driver with real qcow2 files:
tests/unit/virt/test_libvirt_moves.py; and through the processes with the fake driver:
tests/functional/api/test_server_moves.py.)
"""

from __future__ import annotations

import pytest

from tests.fixtures.cloud import CLI_POLL_SECONDS, FLAVOR, address_of, links, qemu_pids
from tests.fixtures.netns import ping_eventually
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]

ADDRESS = "10.9.0.31"


def test_a_running_guest_migrates_to_the_other_host_keeping_its_address(cloud, projects, tmp_path):
    dave = projects("dave")
    cloud.allow_ping(dave)
    network = cloud.osc(dave.env, "network", "create", "--provider-network-type", "vxlan",
                        "--provider-segment", "4251", "net-m")
    cloud.osc(dave.env, "subnet", "create", "--network", "net-m", "--subnet-range", "10.9.0.0/24", "net-m-sub")
    cloud.osc(dave.env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id,
              "--nic", f"net-id={network['id']},v4-fixed-ip={ADDRESS}", "vm-m")
    cloud.wait_status(dave.env, "vm-m")
    bound = f"fabric-guest: eth0 {ADDRESS}/24"
    cloud.wait_console(dave.env, "vm-m", bound)
    source = cloud.host_of(dave.env, "vm-m")
    assert ping_eventually(source.namespace, ADDRESS, 30)

    cloud.osc(dave.env, "server", "migrate", "vm-m", json_out=False)
    shown = cloud.wait_status(dave.env, "vm-m", ("VERIFY_RESIZE",))
    dest = cloud.host_of(dave.env, "vm-m")
    assert dest.name != source.name and address_of(shown) == ADDRESS
    assert qemu_pids(source.namespace) == [] and qemu_pids(dest.namespace)
    cloud.wait_console(dave.env, "vm-m", bound)  # the console of the guest on its new host
    assert ping_eventually(dest.namespace, ADDRESS, 60)

    cloud.osc(dave.env, "server", "resize", "confirm", "vm-m", json_out=False)
    shown = cloud.wait_status(dave.env, "vm-m")
    assert cloud.host_of(dave.env, "vm-m").name == dest.name and address_of(shown) == ADDRESS
    # Nothing of the guest is left on its first host: no QEMU, no tap, no set-aside files.
    wait_until(lambda: not list(source.state_dir.glob("**/instances/*_resize")), 30,
               "the set-aside guest removed from the source", workers=cloud.workers)
    assert not [link for link in links(source.namespace) if link.startswith("fabt")]

    # A resize back to the first host, reverted: the guest runs on `dest` again with its old flavor.
    bigger = f"{FLAVOR}.moves-{dave.name}"
    cloud.osc(dave.env, "flavor", "create", "--ram", "160", "--vcpus", "1", "--disk", "0", bigger)
    try:
        before = cloud.console(dave.env, "vm-m").count(bound)
        cloud.osc(dave.env, "server", "resize", "--flavor", bigger, "vm-m", json_out=False)
        shown = cloud.wait_status(dave.env, "vm-m", ("VERIFY_RESIZE",))
        assert cloud.host_of(dave.env, "vm-m").name == source.name and bigger in str(shown["flavor"])
        assert qemu_pids(source.namespace) and qemu_pids(dest.namespace) == []
        cloud.osc(dave.env, "server", "resize", "revert", "vm-m", json_out=False)
        shown = cloud.wait_status(dave.env, "vm-m")
        assert cloud.host_of(dave.env, "vm-m").name == dest.name and FLAVOR in str(shown["flavor"])
        assert bigger not in str(shown["flavor"]) and address_of(shown) == ADDRESS
        assert qemu_pids(source.namespace) == [] and qemu_pids(dest.namespace)
        # The guest brought back boots again (its console log, kept with it, grows).
        wait_until(lambda: cloud.console(dave.env, "vm-m").count(bound) > before, 180,
                   "the reverted guest to take its address again", workers=cloud.workers, interval=CLI_POLL_SECONDS)
        assert ping_eventually(dest.namespace, ADDRESS, 60)
        actions = [e["Action"] for e in cloud.osc(dave.env, "server", "event", "list", "vm-m")]
        assert actions == ["revertResize", "resize", "confirmResize", "migrate", "create"]
    finally:
        cloud.osc(dave.env, "server", "delete", "--wait", "vm-m", json_out=False)
        cloud.osc(dave.env, "flavor", "delete", bigger, json_out=False)
