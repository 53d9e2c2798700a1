"""Boot benchmark: time from ``build_instance`` to the guest answering ping, and host memory per guest.

Builds a namespace with a bridge, and runs the functional tests' simulated
compute host inside it (tests/functional/compute/compute_host.py, driven
through its client, guest_host_client.py): the product's own workers for one
host on ``memory://`` and SQLite. IPAM allocates each NIC's address, the
network worker (linux driver) puts its tap on the bridge and serves that
address from its own dnsmasq, the boot image is the guest's kernel and initrd
registered in the image store, and the ComputeManager (libvirt driver,
``qemu:///embed``, TCG here) runs with its default collaborators against a
real claim on the host's compute_nodes row, and the network worker enforces
security groups (the harness lets ICMP into the project's default group, so
the bridge's address may ping). For each of N boots it creates
an instance claimed on the host, calls ``build_instance``, pings the guest's
IPAM address until it answers, and reads the QEMU process's resident memory
and CPU time and the guest's own timestamps from its serial console. The
guests stay up (idle: ~0 CPU) until every boot is measured, then are deleted.
Prints the p50/max boot time and memory per guest. Removes the namespace, the
host process (its dnsmasq and guests) and files it made.

Pings go out every 20 ms from a raw ICMP socket, so the figure is not
rounded up to a ping tool's one-second timeout. One untimed boot first
absorbs the one-time QEMU capability probe of a fresh libvirt root (its time
is printed). Where the time goes: the host time at which each of the guest's
console lines (/init started, modules loaded, DHCP lease, ready) appeared,
and the QEMU process's CPU time (what the boot costs, whatever else the
machine runs). The guest's own uptime at those lines is printed too, but do
not trust it on a loaded host: under TCG the guest calibrates its TSC against
an emulated timer that is starved as well, so its clock can run fast or slow
by seconds.

Run from the repository root as root: ``.venv/bin/python tools/bench/boot.py [--boots 5]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tools"), str(REPO / "tools" / "bench")]  # also when loaded by path (the tests)

from _common import ping_from  # noqa: E402

BRIDGE, GATEWAY = "fabbr0", "10.78.0.1/24"
BOOT_DEADLINE = 120.0


def _qemu_usage(pid: int) -> tuple[float, float, float]:
    """(RSS MiB, anonymous RSS MiB, CPU seconds) of QEMU process ``pid``.

    The anonymous part is what each guest costs on its own; the rest is
    mostly the kernel and initrd files, mapped and shared between guests.
    """
    try:
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0, 0.0
    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return int(status["VmRSS"].split()[0]) / 1024, int(status["RssAnon"].split()[0]) / 1024, cpu


_GUEST_MARK = re.compile(r"fabric-guest: (init|modules loaded|eth0 \S+|ready) at ([\d.]+)s")


def guest_marks(console: str) -> dict[str, float]:
    """The guest's own uptime at /init, modules loaded, DHCP bound (eth0) and ready."""
    marks = {}
    for name, uptime in _GUEST_MARK.findall(console):
        marks[name.split()[0]] = float(uptime)
    return marks


class Boot:
    """One instance built on the host and pinged until it answers."""

    def __init__(self, host, ns: str) -> None:
        self.host, self.ns = host, ns
        self.instance_id = host.call("create_instance", vcpus=1, memory_mb=128, disk_gb=0, display_name="bench")
        self.seen: dict[str, float] = {}  # host time when each guest line first showed on the console

    def run(self) -> None:
        """Build the instance and ping its IPAM address; raises RuntimeError when it fails or never answers."""
        before = set(self.host.qemu_pids())
        self.started = time.monotonic()
        self.host.call("build_instance", instance_id=self.instance_id)
        self.spawned = time.monotonic() - self.started
        row = self.host.call("instance", instance_id=self.instance_id)
        if row["vm_state"] != "active":
            raise RuntimeError(f"build_instance left {self.instance_id} {row['vm_state']}: {row['fault']}")
        (self.pid,) = set(self.host.qemu_pids()) - before
        self.cpu_at_start = _qemu_usage(self.pid)[2]  # QEMU start-up, before the guest runs much
        (vif,) = row["network_info"]
        answered = ping_from(self.ns, vif["address"], self.started + BOOT_DEADLINE, on_tick=self.watch_console)
        if answered is None:
            raise RuntimeError(f"{vif['address']} did not answer within {BOOT_DEADLINE:g} s:\n"
                               f"{self.console()[-2000:]}")
        self.answered = answered - self.started
        self.rss, self.rss_anon, self.cpu = _qemu_usage(self.pid)
        self.watch_console()

    def console(self) -> str:
        return self.host.call("get_console_output", instance_id=self.instance_id)

    def watch_console(self) -> None:
        try:
            text = (self.host.instances / self.instance_id / "console.log").read_text(errors="replace")
        except OSError:
            return
        for name in guest_marks(text):
            self.seen.setdefault(name, time.monotonic() - self.started)

    def delete(self) -> None:
        self.host.call("terminate_instance", instance_id=self.instance_id)


def bench(host, ns: str, count: int) -> None:
    started = time.monotonic()
    warm_up = Boot(host, ns)
    warm_up.run()
    print(f"first boot on a fresh libvirt root (with its one-time QEMU capability probe; not in the figures): "
          f"{time.monotonic() - started:.2f} s (virt_type {host.virt_type})", flush=True)
    boots = []
    for slot in range(count):
        boot = Boot(host, ns)
        boot.run()
        guest = guest_marks(boot.console())
        on_host = ", ".join(f"{k} {v:.2f}" for k, v in boot.seen.items())
        in_guest = ", ".join(f"{k} {v:.2f}" for k, v in guest.items())
        print(f"boot {slot}: build_instance returned after {boot.spawned:.2f} s, first ping after "
              f"{boot.answered:.2f} s, QEMU CPU {boot.cpu:.2f} s ({boot.cpu_at_start:.2f} when started), "
              f"RSS {boot.rss:.0f} MiB ({boot.rss_anon:.0f} anon)\n"
              f"  console lines seen at (host s after build_instance): [{on_host}]; "
              f"guest uptime at them: [{in_guest}]", flush=True)
        boots.append(boot)
    for boot in [warm_up, *boots]:
        boot.delete()
    answered = [b.answered for b in boots]
    print(f"build_instance -> ping over {count} boots: p50 {statistics.median(answered):.2f} s, "
          f"min {min(answered):.2f} s, max {max(answered):.2f} s (virt_type {host.virt_type})")
    print(f"QEMU CPU time to first ping: p50 {statistics.median(b.cpu for b in boots):.2f} s")
    init_seen = [b.seen["init"] for b in boots if "init" in b.seen]
    print(f"phases (p50, host s after build_instance was called): build_instance returned "
          f"{statistics.median(b.spawned for b in boots):.2f}, /init on the console "
          f"{statistics.median(init_seen) if init_seen else float('nan'):.2f}, "
          f"first ping {statistics.median(answered):.2f}")
    print(f"host memory per guest (QEMU RSS, 128 MiB guest): p50 {statistics.median(b.rss for b in boots):.0f} MiB, "
          f"of which anonymous {statistics.median(b.rss_anon for b in boots):.0f} MiB (the rest: file pages of "
          f"QEMU, its libraries and the kernel, shared between guests)")
    print(f"host load average while measuring: {os.getloadavg()[0]:.1f} (CPUs: {os.cpu_count()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--cache", help="guest image cache (default: $FABRIC_GUEST_CACHE or ~/.cache/fabric/guest)")
    args = parser.parse_args()

    import guest_image

    from tests.functional.compute.guest_host_client import GuestHost

    image = guest_image.ensure_guest_image(args.cache)
    ns = f"fabbench-{uuid.uuid4().hex[:6]}"
    # QEMU's monitor socket path must fit in 108 bytes: keep the embed root short.
    work = Path(tempfile.mkdtemp(prefix="fabboot-", dir="/tmp"))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    host = None
    try:
        def in_ns(*argv):
            subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, capture_output=True)

        in_ns("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        in_ns("ip", "link", "set", "lo", "up")
        in_ns("ip", "link", "add", BRIDGE, "type", "bridge")
        in_ns("ip", "addr", "add", GATEWAY, "dev", BRIDGE)
        in_ns("ip", "link", "set", BRIDGE, "up")
        host = GuestHost(ns, work, work / "compute_host.log", BRIDGE, GATEWAY, image.__dict__)
        try:
            bench(host, ns, args.boots)
        except RuntimeError as exc:
            logs = {name: path.read_text(errors="replace")[-3000:] if path.exists() else "(none)" for name, path in
                    (("compute host", work / "compute_host.log"), ("dnsmasq", host.dhcp_hosts.with_name("log")))}
            print(str(exc) + "".join(f"\n--- {name} log (end)\n{text}" for name, text in logs.items()),
                  file=sys.stderr)
            return 1
        return 0
    finally:
        if host is not None:
            host.close()  # the host tears down its guests, taps and dnsmasq; stragglers killed by PID
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
