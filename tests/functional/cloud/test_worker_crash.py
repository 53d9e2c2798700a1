"""A host's ``fabric-compute``, or its ``fabric-network``, killed with SIGKILL in the middle of
a boot and started again: the server ends ACTIVE with working networking, or ERROR with a
fault that says why; never stuck in BUILD.

"In the middle" is made certain, not hoped for: the network workers are stopped (SIGSTOP)
before the server is created, so the compute worker that builds it waits inside the build,
in ``networking``, for its plug call; the worker under test is killed right then.
"""

from __future__ import annotations

import signal
import time

import pytest
import sqlalchemy as sa

from fabric.compute import states
from fabric.db.models import Instance
from tests.fixtures.cloud import BOOT_DEADLINE, FLAVOR, address_of, qemu_pids
from tests.fixtures.netns import ping_eventually
from tests.fixtures.processes import wait_until

pytestmark = [pytest.mark.functional, pytest.mark.slow]


def _instance(cloud, server_id: str) -> Instance:
    with cloud.db.begin() as session:
        row = session.get(Instance, server_id)
        session.expunge(row)
        return row


@pytest.mark.parametrize("victim", ["fabric-compute", "fabric-network"])
def test_a_worker_killed_mid_boot_and_restarted_leaves_the_server_active_or_failed_never_stuck(
        cloud, projects, victim):
    dave = projects("dave")
    cloud.allow_ping(dave)  # the test pings the guest from its host
    cloud.osc(dave.env, "network", "create", "--provider-network-type", "vxlan", "net-d")
    cloud.osc(dave.env, "subnet", "create", "--network", "net-d", "--subnet-range", "10.9.1.0/24", "net-d-sub")
    network_workers = {h.name: cloud.hosts.worker(h.name, "fabric-network") for h in cloud.hosts.hosts}
    for popen in network_workers.values():
        popen.send_signal(signal.SIGSTOP)
    try:
        server = cloud.osc(dave.env, "server", "create", "--flavor", FLAVOR, "--image", cloud.image_id,
                           "--network", "net-d", "boot-d")
        # The build has begun on a host: its address is allocated, its plug call waits on the stopped worker.
        row = wait_until(lambda: (r := _instance(cloud, server["id"])).task_state == states.NETWORKING
                         and r.host and r, 60, "the build to reach networking", workers=cloud.workers)
        host = row.host
        cloud.hosts.kill_worker(host, victim)
    finally:
        for popen in network_workers.values():
            if popen.poll() is None:
                popen.send_signal(signal.SIGCONT)
    cloud.hosts.restart_worker(host, victim)

    # Never stuck: a resting state well within the boot deadline.
    deadline = time.monotonic() + BOOT_DEADLINE
    while (shown := cloud.osc(dave.env, "server", "show", "boot-d"))["status"] not in ("ACTIVE", "ERROR"):
        assert time.monotonic() < deadline, f"boot-d stuck in {shown['status']} after {victim} was killed:\n" \
                                            f"{cloud.logs()}"
        time.sleep(1)
    print(f"after {victim} was killed mid-boot: {shown['status']} {shown.get('fault') or ''}")
    if shown["status"] == "ERROR":
        assert shown.get("fault") and shown["fault"].get("message"), shown
        assert qemu_pids(cloud.hosts.host(host).namespace) == []
        return
    # Active: one guest (not a second one from the resumed build), taking its address and answering.
    namespace = cloud.hosts.host(shown["OS-EXT-SRV-ATTR:host"]).namespace
    address = address_of(shown)
    assert len(qemu_pids(namespace)) == 1
    cloud.wait_console(dave.env, "boot-d", f"fabric-guest: eth0 {address}/24")
    assert ping_eventually(namespace, address, 60)
    with cloud.db.begin() as session:
        assert session.scalar(sa.select(Instance.task_state).where(Instance.id == shown["id"])) is None
