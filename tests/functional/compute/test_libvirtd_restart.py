"""The libvirt driver survives a libvirtd restart: it reconnects and finds its running guest again.

libvirtd runs for real (``qemu:///system``) inside a test network namespace
and a private mount namespace whose /etc, /run, /var/{lib,log,cache} are
overlays, so its configuration, sockets and state never touch the host's.
The compute host process joins the same namespaces. The guest only has to
be running (no network), so it is not waited for to boot.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.databases import unavailable
from tests.fixtures.processes import Worker, stop_process, wait_until
from tests.functional.compute.guest_host_client import GuestHost

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
import guest_image  # noqa: E402

pytestmark = pytest.mark.functional

OVERLAID = ("/etc", "/run", "/var/lib", "/var/log", "/var/cache")
QEMU_CONF = 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\nstdio_handler = "file"\n'
SOCKET = "/run/libvirt/libvirt-sock"


def _require(condition: bool, reason: str) -> None:
    if not condition:
        unavailable(reason)


class PrivateLibvirtd:
    """A mount namespace (held by a sleeping process) in which libvirtd can be started and stopped."""

    def __init__(self, ns: str, work: Path) -> None:
        self.work = work
        script = ["set -e"]
        for path in OVERLAID:
            name = path.strip("/").replace("/", "_")
            upper, scratch = work / f"upper_{name}", work / f"work_{name}"
            upper.mkdir()
            scratch.mkdir()
            script.append(f"mount -t overlay overlay -o lowerdir={path},upperdir={upper},workdir={scratch} {path}")
        script += ["mkdir -p /etc/libvirt /var/log/libvirt /var/lib/libvirt /run/libvirt",
                   f"printf '{QEMU_CONF}' > /etc/libvirt/qemu.conf", "echo mounted", "exec sleep infinity"]
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
             "\n".join(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.holder.stdout.readline().strip() != "mounted":
            raise RuntimeError(f"mount namespace setup failed: {self.holder.stderr.read()}")
        self.enter = ["nsenter", f"--target={self.holder.pid}", "--mount", "--net"]
        self.daemon: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        """Start libvirtd and wait until its socket accepts connections."""
        self.starts += 1
        log_path = self.work / f"libvirtd-{self.starts}.log"
        with open(log_path, "wb") as log:
            self.daemon = subprocess.Popen([*self.enter, "libvirtd"], stdout=log, stderr=subprocess.STDOUT)
        probe = "import libvirt; libvirt.registerErrorHandler(lambda *a: None, None); libvirt.open('qemu:///system')"
        wait_until(lambda: subprocess.run([*self.enter, sys.executable, "-c", probe],
                                          capture_output=True).returncode == 0,
                   timeout, "libvirtd to answer", workers=[Worker(self.daemon, log_path, "libvirtd")], interval=0.2)

    def stop(self) -> None:
        if self.daemon is not None:
            stop_process(self.daemon, timeout=30)

    def close(self) -> None:
        self.stop()
        self.holder.kill()
        self.holder.wait(10)


@pytest.fixture
def libvirtd(netns, tmp_path):
    _require(shutil.which("libvirtd") is not None, "libvirtd is not installed")
    _require(subprocess.run(["getent", "passwd", "libvirt-qemu"], capture_output=True).returncode == 0,
             "libvirt's QEMU driver needs a libvirt-qemu user (useradd --system libvirt-qemu)")
    ns = netns("lvd")
    daemon = PrivateLibvirtd(ns, tmp_path)
    try:
        daemon.start()
        yield ns, daemon
    finally:
        daemon.close()


def test_a_running_guest_is_found_again_after_libvirtd_restarts(libvirtd, tmp_path):
    ns, daemon = libvirtd
    image = guest_image.ensure_guest_image()
    root = Path(tempfile.mkdtemp(prefix="fablvd-", dir="/tmp"))
    host = GuestHost(ns, root, tmp_path / "compute_host.log", "fabbr0", "10.79.0.1/24", image.__dict__,
                     uri="qemu:///system", enter=daemon.enter)
    try:
        instance_id = host.call("create_instance", vcpus=1, memory_mb=128, disk_gb=0, requested_networks=[])
        host.call("build_instance", instance_id=instance_id)
        assert host.call("instance", instance_id=instance_id)["vm_state"] == "active"
        (qemu,) = host.qemu_pids()

        daemon.stop()  # QEMU keeps running without libvirtd
        assert host.qemu_pids() == [qemu]
        daemon.start()

        # The driver's old connection is dead: it reconnects and finds the same guest.
        assert host.call("driver.list_instances") == [instance_id]
        assert host.call("driver.get_info", uuid=instance_id)["power_state"] == "RUNNING"
        host.call("sync_power_states")
        row = host.call("instance", instance_id=instance_id)
        assert (row["vm_state"], row["power_state"]) == ("active", 1)
        assert host.qemu_pids() == [qemu]

        host.call("terminate_instance", instance_id=instance_id)
        assert host.call("driver.list_instances") == []
        assert host.qemu_pids() == []
        assert host.call("node")["running_vms"] == 0  # its claim was given back
    finally:
        host.close()
        shutil.rmtree(root, ignore_errors=True)
